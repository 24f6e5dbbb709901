/*
 * sdpa_cpu_isa.h — the fused attention's tile code for one instruction set. sdpa_cpu.c
 * includes it once per set, with ISA (a name: the suffix of everything defined here),
 * ISA_VW (floats per vector), ISA_MR x ISA_NB (rows x vectors of a product's block of
 * accumulators, sized to the set's registers) and ISA_ATTR (its target attribute).
 *
 * Invariant: every element is computed by the same operations in the same order whatever
 * the set. Vectors hold neighbouring columns and their lanes never mix; a product's sum
 * runs over its terms in order, one multiply and one add each (no FMA: the build has
 * -ffp-contract=off); a row's sums and maxima run over its columns one at a time; a tail
 * narrower than a vector is computed in a zero-padded vector by the same code. So the sets
 * give the same bits and differ only in speed.
 */
#define SDPA_CAT2(a, b) a##_##b
#define SDPA_CAT(a, b) SDPA_CAT2(a, b)
#define FN(name) SDPA_CAT(name, ISA)
#define vf SDPA_CAT(vf, ISA)
#define vi SDPA_CAT(vi, ISA)
#define vu SDPA_CAT(vu, ISA)
#define VW ISA_VW
#define INLINE static inline __attribute__((always_inline)) ISA_ATTR

typedef float vf __attribute__((vector_size(ISA_VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(ISA_VW * 4), aligned(4)));
typedef uint32_t vu __attribute__((vector_size(ISA_VW * 4), aligned(4)));

/* n floats at p (a whole vector when n >= VW), the rest 0. */
INLINE vf FN(load)(const float *p, int64_t n) {
  if (n >= VW) return *(const vf *)p;
  vf v = {0};
  memcpy(&v, p, sizeof(float) * (size_t)n);
  return v;
}

INLINE void FN(store)(float *p, vf v, int64_t n) {
  if (n >= VW) *(vf *)p = v;
  else memcpy(p, &v, sizeof(float) * (size_t)n);
}

/* s in every lane (s - 0 is s, -0 and NaN included). */
INLINE vf FN(splat)(float s) { return s - (vf){0}; }

/* exp(x) for x <= 0 (and -inf): 2^n * p(r) with n = round(x / ln 2), r = x - n ln 2 in two
 * parts, p Cephes' polynomial (about 1 ulp); below -87, 0. Elementwise only. */
INLINE vf FN(vexp)(vf x) {
  const vf magic = FN(splat)(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
  vi dead = x < FN(splat)(-87.0f);
  vf t = x * FN(splat)(1.44269504088896341f) + magic;
  vf n = t - magic;
  vf r = x - n * FN(splat)(0.693359375f);
  r = r - n * FN(splat)(-2.12194440e-4f);
  vf p = FN(splat)(1.9875691500e-4f);
  p = p * r + FN(splat)(1.3981999507e-3f);
  p = p * r + FN(splat)(8.3334519073e-3f);
  p = p * r + FN(splat)(4.1665795894e-2f);
  p = p * r + FN(splat)(1.6666665459e-1f);
  p = p * r + FN(splat)(5.0000001201e-1f);
  p = p * (r * r) + r + FN(splat)(1.0f);
  vu e = ((vu)t - (vu)magic + 127u) << 23;
  vf y = p * (vf)e;
  return (vf)((vu)y & ~(vu)dead);
}

/* The nearest bf16 value, ties to even; a NaN stays a NaN (fuse_emit.c's bits). */
INLINE vf FN(round_bf16)(vf x) {
  vu u = (vu)x, hi = (vu){0} + 0xFFFF0000u, isnan = (vu)(x != x);
  vu sum = (u + 0x7FFFu + ((u >> 16) & 1u)) & hi, nan = (u | 0x00400000u) & hi;
  return (vf)((nan & isnan) | (sum & ~isnan));
}

/*
 * C[i, 0..n) = (acc ? C[i, 0..n) : 0) + the sum over p = 0 .. k-1, in that order, of
 * A[i*ars + p*acs] * B[p*ldb + 0..n), for the R rows i of one block: R x ISA_NB vectors of
 * accumulators, then one vector at a time, the last one partial.
 */
INLINE void FN(mm_rows)(const int R, int64_t n, int64_t k, const float *A, int64_t ars, int64_t acs, const float *B,
                        int64_t ldb, float *C, int64_t ldc, bool acc) {
  int64_t j = 0;
  for (; j + ISA_NB * VW <= n; j += ISA_NB * VW) {
    vf c[ISA_MR][ISA_NB];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 8") for (int q = 0; q < ISA_NB; q++)
        c[r][q] = acc ? *(const vf *)(C + r * ldc + j + q * VW) : (vf){0};
    for (int64_t p = 0; p < k; p++) {
      const float *b = B + p * ldb + j;
      vf bv[ISA_NB];
      _Pragma("GCC unroll 8") for (int q = 0; q < ISA_NB; q++) bv[q] = *(const vf *)(b + q * VW);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
        vf a = FN(splat)(A[r * ars + p * acs]);
        _Pragma("GCC unroll 8") for (int q = 0; q < ISA_NB; q++) c[r][q] = c[r][q] + a * bv[q];
      }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 8") for (int q = 0; q < ISA_NB; q++)
        *(vf *)(C + r * ldc + j + q * VW) = c[r][q];
  }
  for (; j < n; j += VW) {
    int64_t w = n - j < VW ? n - j : VW;
    vf c[ISA_MR];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) c[r] = acc ? FN(load)(C + r * ldc + j, w) : (vf){0};
    for (int64_t p = 0; p < k; p++) {
      vf b = FN(load)(B + p * ldb + j, w);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) c[r] = c[r] + FN(splat)(A[r * ars + p * acs]) * b;
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) FN(store)(C + r * ldc + j, c[r], w);
  }
}

/* mm_rows over m rows: blocks of ISA_MR, then one row at a time. */
static ISA_ATTR void FN(mm)(int64_t m, int64_t n, int64_t k, const float *A, int64_t ars, int64_t acs, const float *B,
                            int64_t ldb, float *C, int64_t ldc, bool acc) {
  int64_t i = 0;
  for (; i + ISA_MR <= m; i += ISA_MR) FN(mm_rows)(ISA_MR, n, k, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc);
  for (; i < m; i++) FN(mm_rows)(1, n, k, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc);
}

/* x[0..n) *= s, or /= s. */
INLINE void FN(scale_row)(float *x, int64_t n, float s, bool divide) {
  for (int64_t j = 0; j < n; j += VW) {
    int64_t w = n - j < VW ? n - j : VW;
    vf v = FN(load)(x + j, w);
    FN(store)(x + j, divide ? v / FN(splat)(s) : v * FN(splat)(s), w);
  }
}

/* x[0..n) rounded to bf16 in place. */
INLINE void FN(round_row)(float *x, int64_t n) {
  for (int64_t j = 0; j < n; j += VW) {
    int64_t w = n - j < VW ? n - j : VW;
    FN(store)(x + j, FN(round_bf16)(FN(load)(x + j, w)), w);
  }
}

/* 0, 1, ..., VW - 1 */
INLINE vi FN(iota)(void) {
  vi v;
  for (int l = 0; l < VW; l++) v[l] = l;
  return v;
}

/* a where take is set, else b (lanewise) */
INLINE vf FN(pick)(vi take, vf a, vf b) { return (vf)(((vi)a & take) | ((vi)b & ~take)); }

/* p[j] = exp(s[j] * scale - sub) for the n keys of a row, 0 for keys at or past `seen`
 * (the causal limit; n when all are seen). */
INLINE void FN(exp_row)(const float *s, float *p, int64_t n, int64_t seen, float scale, float sub) {
  for (int64_t j = 0; j < n; j += VW) {
    int64_t w = n - j < VW ? n - j : VW;
    vf e = FN(vexp)(FN(load)(s + j, w) * FN(splat)(scale) - FN(splat)(sub));
    FN(store)(p + j, FN(pick)(FN(iota)() + (int32_t)j < (int32_t)seen, e, (vf){0}), w);
  }
}

/*
 * The forward of one unit: query rows [q0, q0 + nq) of head h of batch b, every key tile
 * they see (flash attention's online softmax: the running row maximum m and sum l, the
 * output rescaled by exp(m_old - m_new) as the maximum grows; bf16: the probabilities
 * exp(s - m) rounded before the product with v); then out = o / l, lse = m + log l.
 * The scores are kept transposed, a key to a row of the tile and a query row to a column:
 * the products read the unit's queries transposed once (not each key tile), and a query
 * row's maximum and sum run down a column, a vector's lanes holding neighbouring query rows,
 * each over the keys in order.
 * w: the unit's scratch (sdpa_cpu.c's fwd_scratch); q: the unit's query rows, k and v its kv
 * head's keys and values (sdpa_cpu.c's fwd_unit finds them, widened from bf16 where in16).
 */
static ISA_ATTR void FN(fwd_unit)(const MplSdpa *a, int64_t b, int64_t h, int64_t q0, int64_t nq, float *w,
                                  const float *q, const float *k, const float *v) {
  int64_t hs = a->hs, hv = a->hv, row0 = (b * a->H + h) * a->T + q0;
  float *qt = w, *st = qt + hs * SDPA_BR, *o = st + SDPA_BC * SDPA_BR, *m = o + SDPA_BR * hv, *l = m + SDPA_BR;
  int64_t keys = a->causal && q0 + nq < a->S ? q0 + nq : a->S;
  for (int64_t i = 0; i < SDPA_BR; i++) m[i] = -INFINITY, l[i] = 0;
  for (int64_t i = 0; i < nq; i++)
    for (int64_t c = 0; c < hs; c++) qt[c * SDPA_BR + i] = q[i * hs + c];
  memset(o, 0, sizeof(float) * (size_t)(nq * hv));
  const vf scale = FN(splat)(a->scale), ninf = FN(splat)(-INFINITY);
  for (int64_t k0 = 0; k0 < keys; k0 += SDPA_BC) {
    int64_t nk = keys - k0 < SDPA_BC ? keys - k0 : SDPA_BC;
    FN(mm)(nk, nq, hs, k + k0 * hs, hs, 1, qt, SDPA_BR, st, SDPA_BR, false); /* st[j, i] = k_j . q_i */
    for (int64_t i0 = 0; i0 < nq; i0 += VW) {
      int64_t wd = nq - i0 < VW ? nq - i0 : VW;
      /* lane i sees key k0 + j when it is not past its row (causal) */
      vi row = FN(iota)() + (int32_t)(q0 + i0 - k0);
      bool all = !a->causal || q0 + i0 >= k0 + nk - 1;
      vf mold = FN(load)(m + i0, wd), mx = mold;
      for (int64_t j = 0; j < nk; j++) {
        vf x = FN(load)(st + j * SDPA_BR + i0, wd) * scale;
        if (!all) x = FN(pick)((int32_t)j <= row, x, ninf);
        mx = FN(pick)((x > mx) | (x != x), x, mx); /* a NaN stays once taken */
      }
      /* a row that has seen nothing (all -inf; not a causal row: it sees key 0 first) keeps
         p = 0 and its m, l and o unchanged */
      vi seen = mx != ninf;
      vf al = FN(pick)(mold == ninf, (vf){0}, FN(vexp)(mold - mx)), sum = {0};
      for (int64_t j = 0; j < nk; j++) {
        float *s = st + j * SDPA_BR + i0;
        vf p = FN(vexp)(FN(load)(s, wd) * scale - mx);
        p = FN(pick)(all ? seen : seen & ((int32_t)j <= row), p, (vf){0});
        sum = sum + p;
        FN(store)(s, a->bf16 ? FN(round_bf16)(p) : p, wd);
      }
      vf lold = FN(load)(l + i0, wd);
      FN(store)(l + i0, FN(pick)(seen, lold * al + sum, lold), wd);
      FN(store)(m + i0, FN(pick)(seen, mx, mold), wd);
      for (int64_t r = 0; r < wd; r++) /* the rows' outputs so far, rescaled to the new maximum */
        if (seen[r] && al[r] != 1.0f) FN(scale_row)(o + (i0 + r) * hv, hv, al[r], false);
    }
    FN(mm)(nq, hv, nk, st, 1, SDPA_BR, v + k0 * hv, hv, o, hv, true);
  }
  for (int64_t i = 0; i < nq; i++) {
    FN(scale_row)(o + i * hv, hv, l[i], true);
    memcpy(a->out + (row0 + i) * hv, o + i * hv, sizeof(float) * (size_t)hv);
    a->lse[row0 + i] = m[i] + logf(l[i]);
  }
}

/*
 * The backward of one unit: kv head kvh of batch b, for the G query heads that use it.
 * Per key tile: dk and dv of its keys from every query tile that sees them, the
 * probabilities recomputed from the lse (p = exp(s - lse)), dp = dout v^T, ds = p (dp - D)
 * with D = dout . out per row; dv += p^T dout, dq += ds k (into dq itself, which this unit
 * alone writes), dk += ds^T q; bf16: p and ds rounded before those products. dq and dk are
 * scaled at the end. w: the unit's scratch (sdpa_cpu.c's bwd_scratch); qg, outg, doutg: the
 * group's query rows, k and v the kv head's (sdpa_cpu.c's bwd_unit finds them).
 */
static ISA_ATTR void FN(bwd_unit)(const MplSdpa *a, int64_t b, int64_t kvh, float *w, const float *qg,
                                  const float *k, const float *v, const float *outg, const float *doutg) {
  int64_t hs = a->hs, hv = a->hv, T = a->T, G = a->H / a->Hkv, kv0 = (b * a->Hkv + kvh) * a->S;
  int64_t row0 = (b * a->H + kvh * G) * T; /* the group's first query row */
  float *kt = w, *vt = kt + hs * SDPA_BC, *pt = vt + hv * SDPA_BC, *dpt = pt + SDPA_BR * SDPA_BC;
  float *dk = dpt + SDPA_BR * SDPA_BC, *dv = dk + SDPA_BC * hs, *D = dv + SDPA_BC * hv;
  memset(a->dq + row0 * hs, 0, sizeof(float) * (size_t)(G * T * hs));
  for (int64_t i = 0; i < G * T; i++) {
    float d = 0;
    for (int64_t c = 0; c < hv; c++) d += doutg[i * hv + c] * outg[i * hv + c];
    D[i] = d;
  }
  for (int64_t k0 = 0; k0 < a->S; k0 += SDPA_BC) {
    int64_t nk = a->S - k0 < SDPA_BC ? a->S - k0 : SDPA_BC;
    for (int64_t j = 0; j < nk; j++) {
      for (int64_t c = 0; c < hs; c++) kt[c * SDPA_BC + j] = k[(k0 + j) * hs + c];
      for (int64_t c = 0; c < hv; c++) vt[c * SDPA_BC + j] = v[(k0 + j) * hv + c];
    }
    memset(dk, 0, sizeof(float) * (size_t)(nk * hs));
    memset(dv, 0, sizeof(float) * (size_t)(nk * hv));
    for (int64_t g = 0; g < G; g++)
      for (int64_t q0 = a->causal ? k0 / SDPA_BR * SDPA_BR : 0; q0 < T; q0 += SDPA_BR) {
        int64_t nq = T - q0 < SDPA_BR ? T - q0 : SDPA_BR, r = row0 + g * T + q0;
        const float *q = qg + (g * T + q0) * hs, *dout = doutg + (g * T + q0) * hv;
        FN(mm)(nq, nk, hs, q, hs, 1, kt, SDPA_BC, pt, SDPA_BC, false);
        FN(mm)(nq, nk, hv, dout, hv, 1, vt, SDPA_BC, dpt, SDPA_BC, false);
        for (int64_t i = 0; i < nq; i++) {
          int64_t seen = a->causal ? q0 + i + 1 - k0 : nk;
          seen = seen < 0 ? 0 : seen > nk ? nk : seen;
          float *p = pt + i * SDPA_BC, *dp = dpt + i * SDPA_BC, Di = D[g * T + q0 + i];
          FN(exp_row)(p, p, nk, seen, a->scale, a->lse[r + i]);
          for (int64_t j = 0; j < nk; j += VW) { /* ds = p (dp - D) */
            int64_t wd = nk - j < VW ? nk - j : VW;
            FN(store)(dp + j, FN(load)(p + j, wd) * (FN(load)(dp + j, wd) - FN(splat)(Di)), wd);
          }
          if (a->bf16) FN(round_row)(p, nk), FN(round_row)(dp, nk);
        }
        FN(mm)(nk, hv, nq, pt, 1, SDPA_BC, dout, hv, dv, hv, true);
        FN(mm)(nq, hs, nk, dpt, SDPA_BC, 1, k + k0 * hs, hs, a->dq + r * hs, hs, true);
        FN(mm)(nk, hs, nq, dpt, 1, SDPA_BC, q, hs, dk, hs, true);
      }
    for (int64_t j = 0; j < nk; j++) {
      FN(scale_row)(dk + j * hs, hs, a->scale, false);
      memcpy(a->dk + (kv0 + k0 + j) * hs, dk + j * hs, sizeof(float) * (size_t)hs);
      memcpy(a->dv + (kv0 + k0 + j) * hv, dv + j * hv, sizeof(float) * (size_t)hv);
    }
  }
  for (int64_t i = 0; i < G * T; i++) FN(scale_row)(a->dq + (row0 + i) * hs, hs, a->scale, false);
}

#undef INLINE
#undef VW
#undef vu
#undef vi
#undef vf
#undef FN
#undef SDPA_CAT
#undef SDPA_CAT2
