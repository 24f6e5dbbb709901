// runtime/cuda/sdpa.cu — the fused attention (JS_SDPA, JS_SDPA_BWD) on the GPU: flash
// attention's tiles with an online softmax, the log-sum-exp kept for the backward, no T x S
// buffer. Compiled with NVRTC by a cuda device the first time it meets a head size
// (runtime/device_cuda_progs.c: mpl_cuda_sdpa_compile), with MPL_SDPA_HS and MPL_SDPA_HV defined
// to the head sizes of q/k and of v (at most 256 each), so a thread's rows live in registers.
// Embedded at build time as mpl_cuda_sdpa_src (tools/embed.sh, which leaves out these lines).
//
// The same file also compiles as C on the host (tests/unit/test_sdpa_cu.c defines
// MPL_CU_HOST and runs each block's threads as pthreads, __syncthreads a barrier), so the
// kernels' arithmetic is checked against a float64 reference on a machine without a GPU.
//
// Work: the forward and the dq kernel give each thread one query row (BR threads a block,
// a block per (batch, head, tile of BR rows)); the dk/dv kernel gives each thread one key
// row (a block per (batch, kv head, tile of BR keys)) and walks the G query heads of its kv
// head. Key (or query) tiles of BC rows are staged in shared memory by the whole block.
// Query head h reads kv head h / (H / Hkv); causal: query i sees keys j <= i.
// bf16 (the step's precision): the probabilities and dS are rounded to bf16 before their
// products, as runtime/sdpa_cpu_isa.h does; sums stay in f32. With MPL_SDPA_IN16 defined the
// inputs (q, k, v; the backward's out and dout too) are stored as bf16 (JobStep.in16: two
// bytes, the upper half of the f32 each is) and widened as they are read: the same bits.
#ifndef MPL_CU_HOST
#define MPL_KERNEL(nthreads) extern "C" __global__ void __launch_bounds__(nthreads)
#define MPL_DEV __device__ static inline
#define MPL_SHARED __shared__
#define MPL_SYNC() __syncthreads()
#define MPL_UNROLL _Pragma("unroll")
#define MPL_NO_UNROLL _Pragma("unroll 1")
#define MPL_INF __int_as_float(0x7f800000)
#define MPL_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#if __CUDA_ARCH__ >= 800
#define MPL_HAVE_MMA 1 /* mma.sync with bf16 operands: sm_80 and later */
#endif
#else
#define MPL_HAVE_MMA 1 /* the host's mpl_mma_bf16 and MPL_SHFL_XOR (tests/unit/cuda_host.h) */
#endif

#ifndef MPL_SDPA_HS
#define MPL_SDPA_HS 64
#endif
#ifndef MPL_SDPA_HV
#define MPL_SDPA_HV MPL_SDPA_HS
#endif
#define HS MPL_SDPA_HS
#define HV MPL_SDPA_HV
#ifdef MPL_SDPA_IN16
#define sdpa_in unsigned short
#define SDPA_LD(p, i) __uint_as_float((unsigned)(p)[i] << 16)
#else
#define sdpa_in float
#define SDPA_LD(p, i) ((p)[i])
#endif
#define SDPA_BR 64                                 /* threads a block: query (or key) rows */
#define SDPA_BC ((HS + HV) <= 256 ? 32 : 16)       /* rows of a shared tile (<= 32 KiB) */

/* The nearest bf16 value, ties to even; a NaN stays a NaN (the CPU's bits). */
MPL_DEV float mpl_sdpa_bf16(float x) {
  unsigned u = __float_as_uint(x);
  if (x != x) return __uint_as_float((u | 0x00400000u) & 0xFFFF0000u);
  return __uint_as_float((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}

/* Keys [0, n) of the causal window seen by query i from a tile starting at key k0. */
MPL_DEV int mpl_sdpa_seen(long long i, long long k0, int nk, int causal) {
  if (!causal) return nk;
  long long s = i + 1 - k0;
  return s < 0 ? 0 : s < nk ? (int)s : nk;
}

/* The keys a block of query tile `tile` reads: all S, or under causal up to its last row. */
MPL_DEV long long mpl_sdpa_keys(long long S, long long tile, int causal) {
  return causal && (tile + 1) * SDPA_BR < S ? (tile + 1) * SDPA_BR : S;
}

/* n rows of a [.., HS] and a [.., HV] matrix (from a and b) into the block's shared tiles,
 * thread t of SDPA_BR copying every SDPA_BR-th element. Between two MPL_SYNCs. */
MPL_DEV void mpl_sdpa_stage(float (*ta)[HS], float (*tb)[HV], const sdpa_in *a, const sdpa_in *b, int n, int t) {
  for (int e = t; e < n * HS; e += SDPA_BR) ta[e / HS][e % HS] = SDPA_LD(a, e);
  for (int e = t; e < n * HV; e += SDPA_BR) tb[e / HV][e % HV] = SDPA_LD(b, e);
}

/* out = softmax(q k^T * scale) v per query row, lse = max + log(sum). Grid: B * H * tiles. */
MPL_KERNEL(SDPA_BR) mpl_sdpa_fwd(const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k,
                                 const sdpa_in *__restrict__ v, float *__restrict__ out,
                                 float *__restrict__ lse, long long T, long long S, int H, int Hkv,
                                 float scale, int causal, int bf16) {
  MPL_SHARED float ks[SDPA_BC][HS];
  MPL_SHARED float vs[SDPA_BC][HV];
  MPL_SHARED float scs[SDPA_BR][SDPA_BC + 1]; /* a thread's scores: its row (padded) */
  long long tiles = (T + SDPA_BR - 1) / SDPA_BR, bid = blockIdx.x;
  long long tile = bid % tiles, bh = bid / tiles, b = bh / H;
  int h = (int)(bh % H), t = (int)threadIdx.x;
  long long kvh = b * Hkv + h / (H / Hkv), i = tile * SDPA_BR + t;
  int live = i < T;
  const sdpa_in *qr = q + ((b * H + h) * T + (live ? i : 0)) * HS;
  const sdpa_in *kb = k + kvh * S * HS, *vb = v + kvh * S * HV;
  float qv[HS], o[HV], *sc = scs[t];
  MPL_UNROLL for (int d = 0; d < HS; d++) qv[d] = live ? SDPA_LD(qr, d) : 0.0f;
  MPL_UNROLL for (int c = 0; c < HV; c++) o[c] = 0.0f;
  float m = -MPL_INF, l = 0.0f;
  long long keys = mpl_sdpa_keys(S, tile, causal);
  for (long long k0 = 0; k0 < keys; k0 += SDPA_BC) {
    int nk = keys - k0 < SDPA_BC ? (int)(keys - k0) : SDPA_BC;
    MPL_SYNC();
    mpl_sdpa_stage(ks, vs, kb + k0 * HS, vb + k0 * HV, nk, t);
    MPL_SYNC();
    int seen = live ? mpl_sdpa_seen(i, k0, nk, causal) : 0;
    if (seen == 0) continue;
    float mx = m;
    MPL_NO_UNROLL for (int j = 0; j < seen; j++) {
      float acc = 0.0f;
      MPL_UNROLL for (int d = 0; d < HS; d++) acc += qv[d] * ks[j][d];
      acc = acc * scale;
      sc[j] = acc;
      mx = acc > mx || acc != acc ? acc : mx;
    }
    /* a row that has seen nothing but -inf keeps m, l and o (every p is 0; exp(-inf - -inf)
       would be nan), as the CPU's and the tensor cores' */
    if (mx == -MPL_INF) continue;
    float alpha = m == -MPL_INF ? 0.0f : expf(m - mx), sum = 0.0f;
    MPL_NO_UNROLL for (int j = 0; j < seen; j++) {
      float p = expf(sc[j] - mx);
      sum += p;
      sc[j] = bf16 ? mpl_sdpa_bf16(p) : p;
    }
    l = l * alpha + sum;
    m = mx;
    MPL_UNROLL for (int c = 0; c < HV; c++) o[c] *= alpha;
    MPL_NO_UNROLL for (int j = 0; j < seen; j++) {
      float p = sc[j];
      MPL_UNROLL for (int c = 0; c < HV; c++) o[c] += p * vs[j][c];
    }
  }
  if (live) {
    float *orow = out + ((b * H + h) * T + i) * HV;
    MPL_UNROLL for (int c = 0; c < HV; c++) orow[c] = o[c] / l;
    lse[(b * H + h) * T + i] = m + logf(l);
  }
}

/* dq = scale * sum_j ds_ij k_j, ds = p (dp - D), p = exp(s - lse), dp = dout v^T,
 * D = dout . out. Grid: B * H * tiles of query rows. */
MPL_KERNEL(SDPA_BR) mpl_sdpa_bwd_q(const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k,
                                   const sdpa_in *__restrict__ v, const sdpa_in *__restrict__ out,
                                   const float *__restrict__ lse, const sdpa_in *__restrict__ dout,
                                   float *__restrict__ dq, long long T, long long S, int H, int Hkv,
                                   float scale, int causal, int bf16) {
  MPL_SHARED float ks[SDPA_BC][HS];
  MPL_SHARED float vs[SDPA_BC][HV];
  long long tiles = (T + SDPA_BR - 1) / SDPA_BR, bid = blockIdx.x;
  long long tile = bid % tiles, bh = bid / tiles, b = bh / H;
  int h = (int)(bh % H), t = (int)threadIdx.x;
  long long kvh = b * Hkv + h / (H / Hkv), i = tile * SDPA_BR + t, row = (b * H + h) * T + i;
  int live = i < T;
  const sdpa_in *kb = k + kvh * S * HS, *vb = v + kvh * S * HV;
  float qv[HS], dov[HV], g[HS];
  float D = 0.0f, L = live ? lse[row] : 0.0f;
  MPL_UNROLL for (int d = 0; d < HS; d++) qv[d] = live ? SDPA_LD(q, row * HS + d) : 0.0f, g[d] = 0.0f;
  MPL_UNROLL for (int c = 0; c < HV; c++) {
    dov[c] = live ? SDPA_LD(dout, row * HV + c) : 0.0f;
    D += dov[c] * (live ? SDPA_LD(out, row * HV + c) : 0.0f);
  }
  long long keys = mpl_sdpa_keys(S, tile, causal);
  for (long long k0 = 0; k0 < keys; k0 += SDPA_BC) {
    int nk = keys - k0 < SDPA_BC ? (int)(keys - k0) : SDPA_BC;
    MPL_SYNC();
    mpl_sdpa_stage(ks, vs, kb + k0 * HS, vb + k0 * HV, nk, t);
    MPL_SYNC();
    int seen = live ? mpl_sdpa_seen(i, k0, nk, causal) : 0;
    MPL_NO_UNROLL for (int j = 0; j < seen; j++) {
      float s = 0.0f, dp = 0.0f;
      MPL_UNROLL for (int d = 0; d < HS; d++) s += qv[d] * ks[j][d];
      MPL_UNROLL for (int c = 0; c < HV; c++) dp += dov[c] * vs[j][c];
      float p = expf(s * scale - L), ds = p * (dp - D);
      if (bf16) ds = mpl_sdpa_bf16(ds);
      MPL_UNROLL for (int d = 0; d < HS; d++) g[d] += ds * ks[j][d];
    }
  }
  if (live) {
    MPL_UNROLL for (int d = 0; d < HS; d++) dq[row * HS + d] = g[d] * scale;
  }
}

/* dv_j = sum_i p_ij dout_i, dk_j = scale * sum_i ds_ij q_i over the query rows of every
 * query head on this kv head. Grid: B * Hkv * tiles of keys. */
MPL_KERNEL(SDPA_BR) mpl_sdpa_bwd_kv(const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k,
                                    const sdpa_in *__restrict__ v, const sdpa_in *__restrict__ out,
                                    const float *__restrict__ lse, const sdpa_in *__restrict__ dout,
                                    float *__restrict__ dk, float *__restrict__ dv, long long T,
                                    long long S, int H, int Hkv, float scale, int causal, int bf16) {
  MPL_SHARED float qs[SDPA_BC][HS];
  MPL_SHARED float dos[SDPA_BC][HV];
  MPL_SHARED float Ls[SDPA_BC], Ds[SDPA_BC];
  long long tiles = (S + SDPA_BR - 1) / SDPA_BR, bid = blockIdx.x;
  long long tile = bid % tiles, bk = bid / tiles, b = bk / Hkv;
  int kh = (int)(bk % Hkv), t = (int)threadIdx.x, G = H / Hkv;
  long long j = tile * SDPA_BR + t, krow = (b * Hkv + kh) * S + j;
  int live = j < S;
  float kv_[HS], vv[HV], gk[HS], gv[HV];
  MPL_UNROLL for (int d = 0; d < HS; d++) kv_[d] = live ? SDPA_LD(k, krow * HS + d) : 0.0f, gk[d] = 0.0f;
  MPL_UNROLL for (int c = 0; c < HV; c++) vv[c] = live ? SDPA_LD(v, krow * HV + c) : 0.0f, gv[c] = 0.0f;
  /* causal: the first query that sees key tile*BR is query tile*BR */
  long long first = causal ? tile * SDPA_BR : 0;
  for (int gh = 0; gh < G; gh++) {
    long long row0 = (b * H + (long long)kh * G + gh) * T;
    for (long long q0 = first; q0 < T; q0 += SDPA_BC) {
      int nq = T - q0 < SDPA_BC ? (int)(T - q0) : SDPA_BC;
      MPL_SYNC();
      mpl_sdpa_stage(qs, dos, q + (row0 + q0) * HS, dout + (row0 + q0) * HV, nq, t);
      if (t < nq) {
        float D = 0.0f;
        const sdpa_in *dr = dout + (row0 + q0 + t) * HV, *orow = out + (row0 + q0 + t) * HV;
        for (int c = 0; c < HV; c++) D += SDPA_LD(dr, c) * SDPA_LD(orow, c);
        Ds[t] = D;
        Ls[t] = lse[row0 + q0 + t];
      }
      MPL_SYNC();
      if (!live) continue;
      /* causal: query q0 + r sees key j when q0 + r >= j */
      int r0 = causal && j > q0 ? (j - q0 < nq ? (int)(j - q0) : nq) : 0;
      MPL_NO_UNROLL for (int r = r0; r < nq; r++) {
        float s = 0.0f, dp = 0.0f;
        MPL_UNROLL for (int d = 0; d < HS; d++) s += qs[r][d] * kv_[d];
        MPL_UNROLL for (int c = 0; c < HV; c++) dp += dos[r][c] * vv[c];
        float p = expf(s * scale - Ls[r]), ds = p * (dp - Ds[r]);
        if (bf16) p = mpl_sdpa_bf16(p), ds = mpl_sdpa_bf16(ds);
        MPL_UNROLL for (int c = 0; c < HV; c++) gv[c] += p * dos[r][c];
        MPL_UNROLL for (int d = 0; d < HS; d++) gk[d] += ds * qs[r][d];
      }
    }
  }
  if (live) {
    MPL_UNROLL for (int d = 0; d < HS; d++) dk[krow * HS + d] = gk[d] * scale;
    MPL_UNROLL for (int c = 0; c < HV; c++) dv[krow * HV + c] = gv[c];
  }
}

/* ---- the kernels on tensor cores --------------------------------------------------------
 * Flash attention's forward and backward with the products on tensor cores, f32 sums, in one
 * source for three operand forms:
 *  - bf16 inputs (MPL_SDPA_IN16, a bf16 step): mma.m16n8k16 with bf16 operands, the staged
 *    tiles bf16; the probabilities (and dS) rounded to bf16 as every kernel of a bf16 step
 *    rounds them;
 *  - f32 inputs of a tf32 step (or mplrun --tf32): mma.m16n8k8 with tf32 operands, each
 *    operand rounded to tf32 (cvt.rna: to nearest, ties away from zero) as it is loaded,
 *    the probabilities and dS too; the staged tiles f32 (the *_tc kernels);
 *  - f32 inputs of an f32 step: each product as three tf32 ones (mpl_tc_mma_f32's x3; the
 *    *_x3 kernels), a fragment holding each operand's tf32 part and its tf32 rest, with
 *    smaller tiles (their registers); past head size 64 a warp's rows of q (or k) are read
 *    from a shared copy and its rows of dout (or v) from global memory, a chunk at a time,
 *    split where they are used (SDPA_X3_LAZY).
 * The forward: a block of SDPA_TC_WARPS warps takes 16 query rows a warp; key and value
 * tiles of SDPA_TC_BC rows are staged in shared memory. A warp keeps its scores and its
 * output in accumulator fragments: a thread holds rows groupID and groupID + 8, so a row's
 * maximum and sum combine over the 4 threads of a group (shuffles across lanes 1 and 2
 * apart). The probabilities exp(s - max), rounded against the running maximum as the other
 * kernels round them, become the A operand of the product with v without leaving the
 * thread (bf16: two score fragments side by side are one A fragment; tf32: a score
 * fragment is one, its keys 2 threadID_in_group + {0, 1} standing where the A layout has
 * k = threadID_in_group and + 4, and v's rows read in the same order). Sums stay in f32;
 * their order differs from mpl_sdpa_fwd's, not their rounding. Grid: B * H * tiles of
 * SDPA_TC_BR rows; SDPA_TC_BR * 2 threads a block. The backward is below. */
#ifdef MPL_SDPA_IN16
#define SDPA_TC_OK (HS % 16 == 0 && HV % 8 == 0)
#else
#define SDPA_TC_OK (HS % 8 == 0 && HV % 8 == 0)
#endif
#if defined(MPL_HAVE_MMA) && SDPA_TC_OK && HS <= 128 && HV <= 128
#define SDPA_TC_WARPS 4
#define SDPA_TC_BR (16 * SDPA_TC_WARPS) /* query rows a block (= SDPA_BR) */

#ifdef MPL_SDPA_IN16
#define tc_el unsigned short   /* an element of a staged tile */
#define SDPA_TC_K 16           /* k of one mma: m16n8k16 */
#define SDPA_TC_KP (HS + 8)    /* a staged row, padded (bf16 elements, even) */
#define SDPA_TC_VP (HV + 8)
#define SDPA_TC_QT SDPA_TC_BR  /* the keys' kernel's query tile */
#define SDPA_TC_AW 4           /* registers of an A fragment */
#define SDPA_TC_BCX SDPA_TC_BC /* (x3: f32 inputs only) */
#define SDPA_TC_QTX SDPA_TC_QT
#define SDPA_TC_BW 2           /* and of a B fragment */
#define SDPA_TC_BC (HS > 64 || HV > 64 ? 32 : 64) /* keys a tile (at 128: 64 spilled the forward's registers) */

#ifndef MPL_CU_HOST
/* d += a b: one warp's 16 x 8 x 16 product, bf16 operands, f32 accumulators, in the
 * fragment layout of PTX's mma.m16n8k16 (lane = 4 groupID + threadID_in_group: a holds rows
 * groupID and groupID + 8, columns 2 threadID_in_group + {0, 1} and those + 8; b rows (k)
 * 2 threadID_in_group + {0, 1} and + 8 of column groupID; d as a's rows, columns
 * 2 threadID_in_group + {0, 1}); two bf16 to a register, the lower column (or row) low. */
MPL_DEV void mpl_mma_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
#define mpl_tc_mma(d, a, b, x3) mpl_mma_bf16(d, a, b)

/* two bf16 at p (p[0] the low half) as one register */
MPL_DEV unsigned mpl_tc_ld2(const unsigned short *p) { return (unsigned)p[0] | (unsigned)p[1] << 16; }

/* two f32 rounded to bf16, lo in the low half */
MPL_DEV unsigned mpl_tc_pack(float lo, float hi) {
  return __float_as_uint(mpl_sdpa_bf16(lo)) >> 16 | (__float_as_uint(mpl_sdpa_bf16(hi)) & 0xFFFF0000u);
}

/* The A fragments (k chunks of 16 columns) of this thread's rows r0 (groupID) and r1
 * (groupID + 8) of a row-major bf16 matrix of `width` columns at m; rows from n on are 0. */
MPL_DEV void mpl_tc_rows_a(unsigned (*a)[SDPA_TC_AW], int width, const unsigned short *m, long long r0, long long r1,
                           long long n, int tg, int x3) {
  (void)x3;
  MPL_UNROLL for (int c = 0; c < width / 16; c++) {
    int d = c * 16 + 2 * tg;
    a[c][0] = r0 < n ? mpl_tc_ld2(m + r0 * width + d) : 0u;
    a[c][1] = r1 < n ? mpl_tc_ld2(m + r1 * width + d) : 0u;
    a[c][2] = r0 < n ? mpl_tc_ld2(m + r0 * width + d + 8) : 0u;
    a[c][3] = r1 < n ? mpl_tc_ld2(m + r1 * width + d + 8) : 0u;
  }
}

/* A B fragment whose k runs along row `row` of shared m (rows `pitch` apart), k chunk c
 * (columns c * 16 + 2 threadID_in_group + {0, 1} and + 8): two bf16 pairs. */
MPL_DEV void mpl_tc_row_b(unsigned b[SDPA_TC_BW], const unsigned short *m, int pitch, int row, int c, int tg, int x3) {
  int k0 = c * 16 + 2 * tg;
  (void)x3;
  b[0] = mpl_tc_ld2(m + row * pitch + k0), b[1] = mpl_tc_ld2(m + row * pitch + k0 + 8);
}

/* A B fragment whose k runs down column col of shared m (rows `pitch` apart) from row kr (a
 * chunk's first): rows kr + 2 threadID_in_group + {0, 1} and those + 8, as this thread holds them. */
MPL_DEV void mpl_tc_col_b(unsigned b[SDPA_TC_BW], const unsigned short *m, int pitch, int kr, int col, int tg, int x3) {
  kr += 2 * tg;
  (void)x3;
  b[0] = (unsigned)m[kr * pitch + col] | (unsigned)m[(kr + 1) * pitch + col] << 16;
  b[1] = (unsigned)m[(kr + 8) * pitch + col] | (unsigned)m[(kr + 9) * pitch + col] << 16;
}

/* Accumulator fragments 2c and 2c + 1 (16 columns of this warp's 16 rows), rounded to bf16,
 * as the A fragment of a product over those columns (k chunk c). */
MPL_DEV void mpl_tc_acc_a(unsigned a[SDPA_TC_AW], float (*f)[4], int c, int x3) {
  (void)x3;
  a[0] = mpl_tc_pack(f[2 * c][0], f[2 * c][1]), a[1] = mpl_tc_pack(f[2 * c][2], f[2 * c][3]);
  a[2] = mpl_tc_pack(f[2 * c + 1][0], f[2 * c + 1][1]), a[3] = mpl_tc_pack(f[2 * c + 1][2], f[2 * c + 1][3]);
}

#else /* f32 inputs: tf32 operands */
#define tc_el float
#define SDPA_TC_K 8            /* k of one mma: m16n8k8 */
#define SDPA_TC_KP (HS + 4)    /* a staged row, padded (f32: a fragment's 32 loads on 32 banks) */
#define SDPA_TC_VP (HV + 4)
/* tiles for registers (a tf32 A fragment takes twice a bf16 one's; ptxas of NVRTC's PTX, at
   128: the keys' tile 32 spilled dq's, the query tile 16 dk's) and 48 KiB staged: keys 32 a
   tile and the keys' kernel's query tile 32; past head size 64, 16 and 8 */
#define SDPA_TC_BC (HS > 64 || HV > 64 ? 16 : 32)
#define SDPA_TC_QT (HS > 64 || HV > 64 ? 8 : 32)
#define SDPA_TC_AW 8 /* an A fragment's registers: the tf32 operands, then (x3) their rests */
#define SDPA_TC_BW 4 /* a B fragment's */
/* x3's tiles (its operands take twice the registers): keys, and queries in the keys' kernel */
#define SDPA_TC_BCX (HS > 64 || HV > 64 ? 8 : 16)
#define SDPA_TC_QTX (HS > 64 || HV > 64 ? 8 : 16)
#if SDPA_TC_QTX > SDPA_TC_QT
#error "x3's query tiles are parts of the shared arrays"
#endif
/* x3 past head size 64: a warp's 16 rows of q (the forward, dq) or of k (the keys'
   kernels) read a chunk at a time from the block's shared copy (mpl_tc_hold), its rows of
   dout (dq) or v (dk) from global memory, each split into both parts where it is used
   (mpl_tc_held_dot). Split once and held in registers, they spilled (ptxas, sm_80, at 128:
   dq 1068 bytes a thread, dk 908, the forward 252, dv 136); held as f32 and split at each
   use, dq and dk still spilled 156 and 140. The shared copy is 33 KiB of the 48: tiles of 8
   keys (queries) in their own arrays. The same operands and products, so the same bits. */
#define SDPA_X3_LAZY (HS > 64 || HV > 64)

#ifndef MPL_CU_HOST
/* d += a b: one warp's 16 x 8 x 8 product, tf32 operands (f32 bits, the low 13 of the
 * significand 0), f32 accumulators, in the fragment layout of PTX's mma.m16n8k8 for .tf32
 * (a holds rows groupID (a0, a2) and groupID + 8 (a1, a3), columns threadID_in_group (a0,
 * a1) and + 4 (a2, a3); b rows (k) threadID_in_group and + 4 of column groupID; d rows
 * groupID and + 8, columns 2 threadID_in_group + {0, 1}). */
MPL_DEV void mpl_mma_tf32(float d[4], const unsigned a[4], const unsigned b[2]) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* x rounded to tf32 (to nearest, ties away from zero), as its f32 bits */
MPL_DEV unsigned mpl_tf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}
#endif
/* x as a tf32 operand (*big) and, with x3, the rest as another (*small = tf32(x - big);
 * else 0) */
MPL_DEV void mpl_tc_split(float x, int x3, unsigned *big, unsigned *small) {
  *big = mpl_tf32(x);
  *small = x3 ? mpl_tf32(x - __uint_as_float(*big)) : 0u;
}

/* d += a b on tf32 operands (a[0..3], b[0..1]); with x3 (an f32 step), f32 ones in three
 * tf32 products, as CUTLASS's 3xTF32 (PyTorch's f32 memory-efficient attention on sm_80
 * and later) does: d += a_small b_big + a_big b_small + a_big b_big, the rests
 * (a[4..7], b[2..3]) first; a_small b_small, 2^-22 of the product, left out. */
MPL_DEV void mpl_tc_mma_f32(float d[4], const unsigned *a, const unsigned *b, int x3) {
  if (x3) {
    mpl_mma_tf32(d, a + 4, b);
    mpl_mma_tf32(d, a, b + 2);
  }
  mpl_mma_tf32(d, a, b);
}
#define mpl_tc_mma mpl_tc_mma_f32

/* The A fragments (k chunks of 8 columns) of this thread's rows r0 (groupID) and r1
 * (groupID + 8) of a row-major f32 matrix of `width` columns at m, split as mpl_tc_split
 * does; rows from n on are 0. */
MPL_DEV void mpl_tc_rows_a(unsigned (*a)[SDPA_TC_AW], int width, const float *m, long long r0, long long r1,
                           long long n, int tg, int x3) {
  MPL_UNROLL for (int c = 0; c < width / 8; c++) {
    int d = c * 8 + tg;
    mpl_tc_split(r0 < n ? m[r0 * width + d] : 0.0f, x3, &a[c][0], &a[c][4]);
    mpl_tc_split(r1 < n ? m[r1 * width + d] : 0.0f, x3, &a[c][1], &a[c][5]);
    mpl_tc_split(r0 < n ? m[r0 * width + d + 4] : 0.0f, x3, &a[c][2], &a[c][6]);
    mpl_tc_split(r1 < n ? m[r1 * width + d + 4] : 0.0f, x3, &a[c][3], &a[c][7]);
  }
}

/* A B fragment whose k runs along row `row` of shared m, k chunk c (columns c * 8 +
 * threadID_in_group and + 4), split as mpl_tc_split does. */
MPL_DEV void mpl_tc_row_b(unsigned b[SDPA_TC_BW], const float *m, int pitch, int row, int c, int tg, int x3) {
  int k0 = c * 8 + tg;
  mpl_tc_split(m[row * pitch + k0], x3, &b[0], &b[2]);
  mpl_tc_split(m[row * pitch + k0 + 4], x3, &b[1], &b[3]);
}

/* A B fragment whose k runs down column col of shared m from row kr (a chunk's first), in
 * the order mpl_tc_acc_a gives the A operand's k: rows kr + 2 threadID_in_group (as k =
 * threadID_in_group) and + 1 (as k = threadID_in_group + 4), split as mpl_tc_split does. */
MPL_DEV void mpl_tc_col_b(unsigned b[SDPA_TC_BW], const float *m, int pitch, int kr, int col, int tg, int x3) {
  kr += 2 * tg;
  mpl_tc_split(m[kr * pitch + col], x3, &b[0], &b[2]);
  mpl_tc_split(m[(kr + 1) * pitch + col], x3, &b[1], &b[3]);
}

/* Accumulator fragment c (8 columns of this warp's 16 rows), split as mpl_tc_split does, as
 * the A fragment of a product over those columns (k chunk c): a thread's columns 2
 * threadID_in_group and + 1 stand at k = threadID_in_group and + 4 (mpl_tc_col_b reads
 * the other operand's rows in that order). */
MPL_DEV void mpl_tc_acc_a(unsigned a[SDPA_TC_AW], float (*f)[4], int c, int x3) {
  mpl_tc_split(f[c][0], x3, &a[0], &a[4]), mpl_tc_split(f[c][2], x3, &a[1], &a[5]);
  mpl_tc_split(f[c][1], x3, &a[2], &a[6]), mpl_tc_split(f[c][3], x3, &a[3], &a[7]);
}

#endif
#ifndef SDPA_X3_LAZY
#define SDPA_X3_LAZY 0 /* (bf16 operands: no x3) */
#endif

MPL_DEV float mpl_tc_max(float a, float b) { return b > a || b != b ? b : a; }

/* rows rows of `width` elements from src into shared dst (rows `pitch` apart) by the block's
 * threads; rows from n on 0 (so a product of a padding row is 0, never NaN). Between SYNCs. */
MPL_DEV void mpl_tc_stage(tc_el *dst, int pitch, const sdpa_in *src, int width, int rows, int n, int t) {
  for (int e = t; e < rows * width; e += SDPA_TC_WARPS * 32)
    dst[e / width * pitch + e % width] = e / width < n ? src[e] : (tc_el)0;
}

/* f[j] = a m^T for the 8 rows j*8 .. j*8+7 of shared m (rows `pitch` apart), j < n8: this
 * warp's 16 rows (A fragments a, `width` columns) against n8 * 8 rows of m. */
MPL_DEV void mpl_tc_rows_dot(float (*f)[4], int n8, unsigned (*a)[SDPA_TC_AW], int width, const tc_el *m, int pitch,
                             int g, int tg, int x3) {
  MPL_UNROLL for (int j = 0; j < n8; j++) {
    f[j][0] = f[j][1] = f[j][2] = f[j][3] = 0.0f;
    MPL_UNROLL for (int c = 0; c < width / SDPA_TC_K; c++) {
      unsigned b[SDPA_TC_BW];
      mpl_tc_row_b(b, m, pitch, j * 8 + g, c, tg, x3);
      mpl_tc_mma(f[j], a[c], b, x3);
    }
  }
}

/* f[j] = a m^T as mpl_tc_rows_dot, a this warp's 16 rows: the A fragments a, or (x3 past head
 * size 64) rows g and g + 8 of `held` (`width` columns, rows hp apart; from row hn on 0: read
 * as 0), a chunk at a time */
MPL_DEV void mpl_tc_held_dot(float (*f)[4], int n8, unsigned (*a)[SDPA_TC_AW], const float *held, int hp, long long hn,
                             int width, const tc_el *m, int pitch, int g, int tg, int x3) {
#if SDPA_X3_LAZY
  if (x3) {
    MPL_UNROLL for (int j = 0; j < n8; j++) f[j][0] = f[j][1] = f[j][2] = f[j][3] = 0.0f;
    const float *h0 = g < hn ? held + g * hp : NULL, *h1 = g + 8 < hn ? held + (g + 8) * hp : NULL;
    MPL_NO_UNROLL for (int c = 0; c < width / SDPA_TC_K; c++) { /* (not in registers: a chunk's index may vary) */
      int d = c * 8 + tg;
      unsigned as[SDPA_TC_AW]; /* mpl_tc_rows_a's fragment of chunk c, split once for the n8 products */
      mpl_tc_split(h0 ? h0[d] : 0.0f, 1, &as[0], &as[4]), mpl_tc_split(h1 ? h1[d] : 0.0f, 1, &as[1], &as[5]);
      mpl_tc_split(h0 ? h0[d + 4] : 0.0f, 1, &as[2], &as[6]), mpl_tc_split(h1 ? h1[d + 4] : 0.0f, 1, &as[3], &as[7]);
      MPL_UNROLL for (int j = 0; j < n8; j++) { /* (each f[j]'s sum over the chunks in order) */
        unsigned b[SDPA_TC_BW];
        mpl_tc_row_b(b, m, pitch, j * 8 + g, c, tg, 1);
        mpl_tc_mma_f32(f[j], as, b, 1);
      }
    }
    return;
  }
#endif
  (void)held, (void)hp, (void)hn;
  mpl_tc_rows_dot(f, n8, a, width, m, pitch, g, tg, x3);
}

/* acc[j] += a m for the 8 columns j*8 .. j*8+7 of shared m (rows `pitch` apart), j < n8,
 * over m's rows kr .. kr + SDPA_TC_K - 1 (kr = chunk * SDPA_TC_K): a product whose k runs
 * down m's columns. */
MPL_DEV void mpl_tc_cols_dot(float (*acc)[4], int n8, const unsigned a[SDPA_TC_AW], const tc_el *m, int pitch, int kr,
                             int g, int tg, int x3) {
  MPL_UNROLL for (int j = 0; j < n8; j++) {
    unsigned b[SDPA_TC_BW];
    mpl_tc_col_b(b, m, pitch, kr, j * 8 + g, tg, x3);
    mpl_tc_mma(acc[j], a, b, x3);
  }
}

/* Accumulator fragments f (n8 of them: `width` columns) into rows r0 and r1 of row-major m,
 * each element divided by d0 (row r0) or d1 (r1) where div, else multiplied by them; rows
 * from n on are not written. */
MPL_DEV void mpl_tc_store(float *m, int width, float (*f)[4], long long r0, long long r1, long long n, float d0,
                          float d1, int div, int tg) {
  MPL_UNROLL for (int j = 0; j < width / 8; j++) {
    int col = j * 8 + 2 * tg;
    if (r0 < n) m[r0 * width + col] = div ? f[j][0] / d0 : f[j][0] * d0, m[r0 * width + col + 1] = div ? f[j][1] / d0 : f[j][1] * d0;
    if (r1 < n) m[r1 * width + col] = div ? f[j][2] / d1 : f[j][2] * d1, m[r1 * width + col + 1] = div ? f[j][3] / d1 : f[j][3] * d1;
  }
}

#if SDPA_TC_BR != SDPA_BR
#error "the tensor-core kernels' blocks are the CUDA-core ones' (sdpa_blocks, mpl_sdpa_keys)"
#endif

/* A query block's place (the forward's and dq's grid: B * H * tiles of SDPA_TC_BR rows): the
 * first row of its (batch, head) (*base), its kv head (*kvh), this thread's first row (*r0:
 * groupID's of its warp's 16; the other is *r0 + 8), and the keys the block reads (*keys). */
MPL_DEV void mpl_tc_query_block(long long T, long long S, int H, int Hkv, int causal, long long *base, long long *kvh,
                                long long *r0, long long *keys) {
  long long tiles = (T + SDPA_TC_BR - 1) / SDPA_TC_BR, bid = blockIdx.x;
  long long tile = bid % tiles, bh = bid / tiles, b = bh / H;
  int h = (int)(bh % H), t = (int)threadIdx.x;
  *kvh = b * Hkv + h / (H / Hkv), *base = (b * H + h) * T;
  *r0 = tile * SDPA_TC_BR + (t >> 5) * 16 + ((t & 31) >> 2);
  *keys = mpl_sdpa_keys(S, tile, causal);
}

#if SDPA_X3_LAZY
/* The block's SDPA_TC_BR rows of m (`HS` columns; row first on, rows from n on 0) into shared
 * `rows` (SDPA_TC_KP apart), and the first of this thread's warp's 16 there. Read after the
 * next MPL_SYNC. */
MPL_DEV const float *mpl_tc_hold(float *rows, const float *m, long long first, long long n, int t) {
  long long left = n - first;
  mpl_tc_stage(rows, SDPA_TC_KP, m + first * HS, HS, SDPA_TC_BR, left < SDPA_TC_BR ? (int)left : SDPA_TC_BR, t);
  return rows + (t >> 5) * 16 * SDPA_TC_KP;
}
#endif

/* The kernels are entry points to three bodies below, each with its constants: the forward's
 * and dq's x3 (0: one bf16 or tf32 product each; 1: an f32 step's three tf32 products), the
 * keys' gradients' part (0 both, 1 dv, 2 dk) and x3. */
#define SDPA_TC_FWD_ENTRY(name, x3)                                                                          \
  MPL_KERNEL(SDPA_TC_WARPS * 32)                                                                           \
  name(const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k, const sdpa_in *__restrict__ v,        \
       float *__restrict__ out, float *__restrict__ lse, long long T, long long S, int H, int Hkv, float scale, \
       int causal) {                                                                                       \
    mpl_tc_fwd(x3, q, k, v, out, lse, T, S, H, Hkv, scale, causal);                                        \
  }
#define SDPA_TC_BWD_Q_ENTRY(name, x3)                                                                        \
  MPL_KERNEL(SDPA_TC_WARPS * 32)                                                                           \
  name(const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k, const sdpa_in *__restrict__ v,        \
       const sdpa_in *__restrict__ out, const float *__restrict__ lse, const sdpa_in *__restrict__ dout,   \
       float *__restrict__ dq, long long T, long long S, int H, int Hkv, float scale, int causal) {          \
    mpl_tc_bwd_q(x3, q, k, v, out, lse, dout, dq, T, S, H, Hkv, scale, causal);                            \
  }
#define SDPA_TC_KEYS_ENTRY(name, part, x3)                                                                   \
  MPL_KERNEL(SDPA_TC_WARPS * 32)                                                                           \
  name(const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k, const sdpa_in *__restrict__ v,        \
       const sdpa_in *__restrict__ out, const float *__restrict__ lse, const sdpa_in *__restrict__ dout,   \
       float *__restrict__ dk, float *__restrict__ dv, long long T, long long S, int H, int Hkv, float scale, \
       int causal) {                                                                                       \
    mpl_tc_bwd_keys(part, x3, q, k, v, out, lse, dout, dk, dv, T, S, H, Hkv, scale, causal);                \
  }

/* The forward's body: operands as one tf32 or bf16 product each (x3 0), or (an f32 step's,
 * x3 1) as three tf32 products */
MPL_DEV void mpl_tc_fwd(const int x3, const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k,
                        const sdpa_in *__restrict__ v, float *__restrict__ out, float *__restrict__ lse, long long T,
                        long long S, int H, int Hkv, float scale, int causal) {
  MPL_SHARED tc_el ks[SDPA_TC_BC][SDPA_TC_KP];
  MPL_SHARED tc_el vs[SDPA_TC_BC][SDPA_TC_VP];
  tc_el *kt = &ks[0][0], *vt = &vs[0][0]; /* the staged tiles */
  int t = (int)threadIdx.x, g = (t & 31) >> 2, tg = t & 3;
  long long base, kvh, r0, keys;
  mpl_tc_query_block(T, S, H, Hkv, causal, &base, &kvh, &r0, &keys);
  long long r1 = r0 + 8; /* this thread's query rows: r0 and r1 */
  const sdpa_in *kb = k + kvh * S * HS, *vb = v + kvh * S * HV;
  unsigned qa[HS / SDPA_TC_K][SDPA_TC_AW]; /* the warp's 16 rows of q as A fragments, a k chunk each */
  const float *held = NULL;                /* or (x3 past head size 64) in the block's shared copy */
#if SDPA_X3_LAZY
  MPL_SHARED float qrows[SDPA_TC_BR][SDPA_TC_KP], ks3[SDPA_TC_BCX][SDPA_TC_KP], vs3[SDPA_TC_BCX][SDPA_TC_VP];
  if (x3) {
    held = mpl_tc_hold(&qrows[0][0], q + base * HS, r0 - (t >> 5) * 16 - g, T, t);
    kt = &ks3[0][0], vt = &vs3[0][0];
  } else
#endif
    mpl_tc_rows_a(qa, HS, q + base * HS, r0, r1, T, tg, x3);
  float o[HV / 8][4];
  MPL_UNROLL for (int j = 0; j < HV / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -MPL_INF, m1 = -MPL_INF, l0 = 0.0f, l1 = 0.0f;
  const int bc = x3 ? SDPA_TC_BCX : SDPA_TC_BC; /* keys a tile */
  for (long long k0 = 0; k0 < keys; k0 += bc) {
    int nk = keys - k0 < bc ? (int)(keys - k0) : bc;
    MPL_SYNC();
    mpl_tc_stage(kt, SDPA_TC_KP, kb + k0 * HS, HS, bc, nk, t);
    mpl_tc_stage(vt, SDPA_TC_VP, vb + k0 * HV, HV, bc, nk, t);
    MPL_SYNC();
    float sc[SDPA_TC_BC / 8][4]; /* the scores: 8 keys a fragment */
    mpl_tc_held_dot(sc, bc / 8, qa, held, SDPA_TC_KP, 16, HS, kt, SDPA_TC_KP, g, tg, x3);
    float mx0 = m0, mx1 = m1;
    MPL_UNROLL for (int j = 0; j < bc / 8; j++) {
      MPL_UNROLL for (int i = 0; i < 4; i++) {
        long long key = k0 + j * 8 + 2 * tg + (i & 1), row = i < 2 ? r0 : r1;
        float x = sc[j][i] * scale;
        if (key >= k0 + nk || (causal && key > row)) x = -MPL_INF;
        sc[j][i] = x;
        if (i < 2) mx0 = mpl_tc_max(mx0, x);
        else mx1 = mpl_tc_max(mx1, x);
      }
    }
    mx0 = mpl_tc_max(mx0, MPL_SHFL_XOR(mx0, 1));
    mx0 = mpl_tc_max(mx0, MPL_SHFL_XOR(mx0, 2));
    mx1 = mpl_tc_max(mx1, MPL_SHFL_XOR(mx1, 1));
    mx1 = mpl_tc_max(mx1, MPL_SHFL_XOR(mx1, 2));
    float a0 = m0 == -MPL_INF ? 0.0f : expf(m0 - mx0), a1 = m1 == -MPL_INF ? 0.0f : expf(m1 - mx1);
    float s0 = 0.0f, s1 = 0.0f;
    MPL_UNROLL for (int j = 0; j < bc / 8; j++) {
      MPL_UNROLL for (int i = 0; i < 4; i++) {
        float mx = i < 2 ? mx0 : mx1, p = mx == -MPL_INF ? 0.0f : expf(sc[j][i] - mx);
        if (i < 2) s0 += p;
        else s1 += p;
        sc[j][i] = p;
      }
    }
    s0 += MPL_SHFL_XOR(s0, 1);
    s0 += MPL_SHFL_XOR(s0, 2);
    s1 += MPL_SHFL_XOR(s1, 1);
    s1 += MPL_SHFL_XOR(s1, 2);
    l0 = l0 * a0 + s0, l1 = l1 * a1 + s1;
    m0 = mx0, m1 = mx1;
    MPL_UNROLL for (int j = 0; j < HV / 8; j++) o[j][0] *= a0, o[j][1] *= a0, o[j][2] *= a1, o[j][3] *= a1;
    MPL_UNROLL for (int c = 0; c < bc / SDPA_TC_K; c++) {
      unsigned pa[SDPA_TC_AW]; /* the keys of k chunk c, rounded */
      mpl_tc_acc_a(pa, sc, c, x3);
      mpl_tc_cols_dot(o, HV / 8, pa, vt, SDPA_TC_VP, c * SDPA_TC_K, g, tg, x3);
    }
  }
  mpl_tc_store(out + base * HV, HV, o, r0, r1, T, l0, l1, 1, tg);
  if (tg == 0 && r0 < T) lse[base + r0] = m0 + logf(l0);
  if (tg == 0 && r1 < T) lse[base + r1] = m1 + logf(l1);
}

SDPA_TC_FWD_ENTRY(mpl_sdpa_fwd_tc, 0)

#if !defined(MPL_SDPA_IN16) || HV % 16 == 0 /* bf16: dp = dout v^T has k = HV in chunks of 16 */
/* ---- the backward on tensor cores (head sizes up to 128) -----------------------------------
 * mpl_sdpa_bwd_q and _kv's work, their products on tensor cores, their arithmetic per
 * element the same (p = exp(s scale - lse), ds = p (dp - D), D = dout . out summed over the
 * columns in order; p and ds rounded to the operands' type). dq: a warp per 16 query rows,
 * over staged key tiles of SDPA_TC_BC; s = q k^T and dp = dout v^T in fragments, dq += ds k.
 * dk and dv: a warp per 16 keys, over the query rows of every query head of its kv head in
 * staged tiles of SDPA_TC_QT (with their lse and D): s^T = k q^T and dp^T = v dout^T,
 * dv += p^T dout and dk += ds^T q. Blocks as the forward's.
 * Registers (ptxas -v, sm_80 and sm_90, tests/unit/test_sdpa.c checks there are no spills):
 * the keys' kernel holds its warp's keys of k and v and both their gradients, past a thread's
 * 255 registers at head sizes above 64 (652 bytes spilled at 128 on sm_90, bf16); so dk and
 * dv are also two kernels, mpl_sdpa_bwd_dk_tc and mpl_sdpa_bwd_dv_tc (each computes the
 * scores: one product more than mpl_sdpa_bwd_kv_tc), the same bits. The device takes them
 * where the one kernel is not compiled. */
/* dq's body (x3 as mpl_tc_fwd's) */
MPL_DEV void mpl_tc_bwd_q(const int x3, const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k,
                          const sdpa_in *__restrict__ v, const sdpa_in *__restrict__ out, const float *__restrict__ lse,
                          const sdpa_in *__restrict__ dout, float *__restrict__ dq, long long T, long long S, int H,
                          int Hkv, float scale, int causal) {
  MPL_SHARED tc_el ks[SDPA_TC_BC][SDPA_TC_KP];
  MPL_SHARED tc_el vs[SDPA_TC_BC][SDPA_TC_VP];
  tc_el *kt = &ks[0][0], *vt = &vs[0][0]; /* the staged tiles */
  int t = (int)threadIdx.x, g = (t & 31) >> 2, tg = t & 3;
  long long base, kvh, r0, keys;
  mpl_tc_query_block(T, S, H, Hkv, causal, &base, &kvh, &r0, &keys);
  long long r1 = r0 + 8;
  const sdpa_in *kb = k + kvh * S * HS, *vb = v + kvh * S * HV;
  unsigned qa[HS / SDPA_TC_K][SDPA_TC_AW], da[HV / SDPA_TC_K][SDPA_TC_AW]; /* the warp's rows of q and of dout, as A fragments */
  /* or (x3 past head size 64) q's in the block's shared copy and dout's where they are */
  const float *held = NULL, *dheld = NULL;
  long long w0 = r0 - g; /* the warp's first row */
#if SDPA_X3_LAZY
  MPL_SHARED float qrows[SDPA_TC_BR][SDPA_TC_KP], ks3[SDPA_TC_BCX][SDPA_TC_KP], vs3[SDPA_TC_BCX][SDPA_TC_VP];
  if (x3) {
    held = mpl_tc_hold(&qrows[0][0], q + base * HS, w0 - (t >> 5) * 16, T, t);
    dheld = dout + (base + w0) * HV, kt = &ks3[0][0], vt = &vs3[0][0];
  } else
#endif
  {
    mpl_tc_rows_a(qa, HS, q + base * HS, r0, r1, T, tg, x3);
    mpl_tc_rows_a(da, HV, dout + base * HV, r0, r1, T, tg, x3);
  }
  float D0 = 0.0f, D1 = 0.0f, L0 = r0 < T ? lse[base + r0] : 0.0f, L1 = r1 < T ? lse[base + r1] : 0.0f;
  for (int c = 0; c < HV; c++) {
    if (r0 < T) D0 += SDPA_LD(dout, (base + r0) * HV + c) * SDPA_LD(out, (base + r0) * HV + c);
    if (r1 < T) D1 += SDPA_LD(dout, (base + r1) * HV + c) * SDPA_LD(out, (base + r1) * HV + c);
  }
  float acc[HS / 8][4];
  MPL_UNROLL for (int j = 0; j < HS / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
  const int bc = x3 ? SDPA_TC_BCX : SDPA_TC_BC; /* keys a tile */
  for (long long k0 = 0; k0 < keys; k0 += bc) {
    int nk = keys - k0 < bc ? (int)(keys - k0) : bc;
    MPL_SYNC();
    mpl_tc_stage(kt, SDPA_TC_KP, kb + k0 * HS, HS, bc, nk, t);
    mpl_tc_stage(vt, SDPA_TC_VP, vb + k0 * HV, HV, bc, nk, t);
    MPL_SYNC();
    float sc[SDPA_TC_BC / 8][4], dp[SDPA_TC_BC / 8][4]; /* s = q k^T, dp = dout v^T */
    mpl_tc_held_dot(sc, bc / 8, qa, held, SDPA_TC_KP, 16, HS, kt, SDPA_TC_KP, g, tg, x3);
    mpl_tc_held_dot(dp, bc / 8, da, dheld, HV, T - w0, HV, vt, SDPA_TC_VP, g, tg, x3);
    MPL_UNROLL for (int j = 0; j < bc / 8; j++) {
      MPL_UNROLL for (int i = 0; i < 4; i++) {
        long long key = k0 + j * 8 + 2 * tg + (i & 1), row = i < 2 ? r0 : r1;
        int dead = key >= k0 + nk || (causal && key > row) || row >= T;
        float p = dead ? 0.0f : expf(sc[j][i] * scale - (i < 2 ? L0 : L1));
        sc[j][i] = dead ? 0.0f : p * (dp[j][i] - (i < 2 ? D0 : D1)); /* ds, rounded as it is packed */
      }
    }
    MPL_UNROLL for (int c = 0; c < bc / SDPA_TC_K; c++) {
      unsigned sa[SDPA_TC_AW];
      mpl_tc_acc_a(sa, sc, c, x3);
      mpl_tc_cols_dot(acc, HS / 8, sa, kt, SDPA_TC_KP, c * SDPA_TC_K, g, tg, x3);
    }
  }
  mpl_tc_store(dq + base * HS, HS, acc, r0, r1, T, scale, scale, 0, tg);
}

SDPA_TC_BWD_Q_ENTRY(mpl_sdpa_bwd_q_tc, 0)

/* The keys' gradients of one block: dv (part 1), dk (part 2) or both (part 0), x3 as
 * mpl_tc_fwd's; each kernel below passes constants, so what it does not need is not in its
 * registers. */
MPL_DEV void mpl_tc_bwd_keys(const int part, const int x3, const sdpa_in *__restrict__ q, const sdpa_in *__restrict__ k,
                             const sdpa_in *__restrict__ v, const sdpa_in *__restrict__ out,
                             const float *__restrict__ lse, const sdpa_in *__restrict__ dout,
                             float *__restrict__ dk, float *__restrict__ dv, long long T, long long S, int H, int Hkv,
                             float scale, int causal) {
  MPL_SHARED tc_el qs[SDPA_TC_QT][SDPA_TC_KP];
  MPL_SHARED tc_el dos[SDPA_TC_QT][SDPA_TC_VP];
  MPL_SHARED float Ls[SDPA_TC_QT], Ds[SDPA_TC_QT];
  const int want_v = part != 2, want_k = part != 1, qt = x3 ? SDPA_TC_QTX : SDPA_TC_QT; /* queries a tile */
  long long tiles = (S + SDPA_TC_BR - 1) / SDPA_TC_BR, bid = blockIdx.x;
  long long tile = bid % tiles, bk = bid / tiles, b = bk / Hkv;
  int kh = (int)(bk % Hkv), t = (int)threadIdx.x, lane = t & 31, g = lane >> 2, tg = lane & 3, G = H / Hkv;
  long long kbase = (b * Hkv + kh) * S;
  long long j0 = tile * SDPA_TC_BR + (t >> 5) * 16 + g, j1 = j0 + 8; /* this thread's keys */
  unsigned ka[HS / SDPA_TC_K][SDPA_TC_AW], va[HV / SDPA_TC_K][SDPA_TC_AW]; /* the warp's 16 keys of k and v, as A fragments */
  /* or (x3 past head size 64) k's in the block's shared copy and v's where they are */
  const float *held = NULL, *vheld = NULL;
#if SDPA_X3_LAZY
  MPL_SHARED float krows[SDPA_TC_BR][SDPA_TC_KP];
  if (x3) held = mpl_tc_hold(&krows[0][0], k + kbase * HS, tile * SDPA_TC_BR, S, t), vheld = v + (kbase + j0 - g) * HV;
  else
#endif
  {
    mpl_tc_rows_a(ka, HS, k + kbase * HS, j0, j1, S, tg, x3);
    if (want_k) mpl_tc_rows_a(va, HV, v + kbase * HV, j0, j1, S, tg, x3);
  }
  float gk[HS / 8][4], gv[HV / 8][4];
  MPL_UNROLL for (int j = 0; j < HS / 8; j++) gk[j][0] = gk[j][1] = gk[j][2] = gk[j][3] = 0.0f;
  MPL_UNROLL for (int j = 0; j < HV / 8; j++) gv[j][0] = gv[j][1] = gv[j][2] = gv[j][3] = 0.0f;
  long long first = causal ? tile * SDPA_TC_BR : 0; /* earlier queries see none of these keys */
  for (int gh = 0; gh < G; gh++) {
    long long row0 = (b * H + (long long)kh * G + gh) * T;
    for (long long q0 = first; q0 < T; q0 += qt) {
      int nq = T - q0 < qt ? (int)(T - q0) : qt;
      MPL_SYNC();
      mpl_tc_stage(&qs[0][0], SDPA_TC_KP, q + (row0 + q0) * HS, HS, qt, nq, t);
      mpl_tc_stage(&dos[0][0], SDPA_TC_VP, dout + (row0 + q0) * HV, HV, qt, nq, t);
      if (t < qt) {
        float D = 0.0f;
        if (want_k && t < nq)
          for (int c = 0; c < HV; c++)
            D += SDPA_LD(dout, (row0 + q0 + t) * HV + c) * SDPA_LD(out, (row0 + q0 + t) * HV + c);
        Ds[t] = D;
        Ls[t] = t < nq ? lse[row0 + q0 + t] : 0.0f;
      }
      MPL_SYNC();
      float st[SDPA_TC_QT / 8][4], dpt[SDPA_TC_QT / 8][4]; /* s^T = k q^T, dp^T = v dout^T: 8 queries a fragment */
      mpl_tc_held_dot(st, qt / 8, ka, held, SDPA_TC_KP, 16, HS, &qs[0][0], SDPA_TC_KP, g, tg, x3);
      if (want_k) mpl_tc_held_dot(dpt, qt / 8, va, vheld, HV, S - (j0 - g), HV, &dos[0][0], SDPA_TC_VP, g, tg, x3);
      MPL_UNROLL for (int j = 0; j < qt / 8; j++) {
        MPL_UNROLL for (int i = 0; i < 4; i++) {
          int r = j * 8 + 2 * tg + (i & 1);
          long long qi = q0 + r, key = i < 2 ? j0 : j1;
          int dead = r >= nq || key >= S || (causal && key > qi);
          float p = dead ? 0.0f : expf(st[j][i] * scale - Ls[r]);
          if (want_k) dpt[j][i] = dead ? 0.0f : p * (dpt[j][i] - Ds[r]); /* ds */
          st[j][i] = p; /* both rounded as they are packed */
        }
      }
      MPL_UNROLL for (int c = 0; c < qt / SDPA_TC_K; c++) {
        unsigned pa[SDPA_TC_AW], sa[SDPA_TC_AW]; /* queries of k chunk c */
        if (want_v) {
          mpl_tc_acc_a(pa, st, c, x3);
          mpl_tc_cols_dot(gv, HV / 8, pa, &dos[0][0], SDPA_TC_VP, c * SDPA_TC_K, g, tg, x3);
        }
        if (want_k) {
          mpl_tc_acc_a(sa, dpt, c, x3);
          mpl_tc_cols_dot(gk, HS / 8, sa, &qs[0][0], SDPA_TC_KP, c * SDPA_TC_K, g, tg, x3);
        }
      }
    }
  }
  if (want_k) mpl_tc_store(dk + kbase * HS, HS, gk, j0, j1, S, scale, scale, 0, tg);
  if (want_v) mpl_tc_store(dv + kbase * HV, HV, gv, j0, j1, S, 1.0f, 1.0f, 0, tg);
}

#if HS <= 64 && HV <= 64 && defined(MPL_SDPA_IN16)
/* dk and dv (bf16, head sizes up to 64: its registers hold both) */
SDPA_TC_KEYS_ENTRY(mpl_sdpa_bwd_kv_tc, 0, 0)
#endif

/* dk alone, and dv alone: the same parameters as mpl_sdpa_bwd_kv_tc, the other gradient not written */
SDPA_TC_KEYS_ENTRY(mpl_sdpa_bwd_dk_tc, 2, 0)
SDPA_TC_KEYS_ENTRY(mpl_sdpa_bwd_dv_tc, 1, 0)

#ifndef MPL_SDPA_IN16
/* An f32 step's: every product as three tf32 ones (x3); the parameters of the kernels
 * above. */
SDPA_TC_FWD_ENTRY(mpl_sdpa_fwd_x3, 1)
SDPA_TC_BWD_Q_ENTRY(mpl_sdpa_bwd_q_x3, 1)
SDPA_TC_KEYS_ENTRY(mpl_sdpa_bwd_dk_x3, 2, 1)
SDPA_TC_KEYS_ENTRY(mpl_sdpa_bwd_dv_x3, 1, 1)
#endif
#endif
#endif
