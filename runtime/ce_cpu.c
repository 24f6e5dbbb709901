/*
 * ce_cpu.c — the fused cross-entropy (issue 14, item 3; JS_CE, JS_CE_BWD) on the CPU: a
 * product's logits and their cross_entropy over chunks of classes, never more than one
 * [N, chunk] block of logits in memory (the scratch, which the caller owns).
 *
 * Forward, for each chunk of classes [c0, c0 + cc): the logits L = x w_chunk^T by the CPU
 * GEMM (gemm.c; bf16 units when the job's precision is bf16), then per row an online
 * log-sum-exp (the running max m and sum s, s rescaled by exp(m - m') when the max grows)
 * and the target's logit when it falls in the chunk. lse = m + log s; the loss is the mean
 * of lse - target logit, summed over the rows in order in double.
 * Backward, for each chunk: L again, G = (exp(L - lse) - onehot(target)) * dloss / N in
 * place, dx (+)= G w_chunk and dw_chunk = G^T x (or x^T G for w [K, V]), both by the GEMM.
 * Under bf16 each chunk of L is rounded to bf16 (as a product's result is) before the
 * softmax, and G before its products.
 *
 * The row loops run as MplKernelFn units over [0, N) through the caller's rows callback
 * (the cpu device's thread pool): each row is one unit's alone and its sums run in a
 * fixed order, so the bits depend on neither the thread count nor the split; the GEMMs
 * are gemm.c's, deterministic for a thread count. The chunk is the job's (mplc's choice,
 * mpl_ce_chunk): the online sum's order depends on it.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"

/* The nearest bf16 value, ties to even; a NaN stays a NaN (fuse_emit.c's bits). */
static inline float round_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if (x != x) u = (u | 0x00400000u) & 0xFFFF0000u;
  else u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  memcpy(&x, &u, 4);
  return x;
}

int64_t mpl_ce_cpu_scratch(const MplCe *a) { return a->N * a->chunk + 4 * a->N; }

/* One chunk's row work: the state of the whole step, the chunk's place. */
typedef struct CeRows {
  const MplCe *a;
  float *L;          /* [N, cc] this chunk's logits (backward: G in place) */
  int64_t c0, cc;
  float *m;          /* [N] running max (forward) */
  double *s;         /* [N] running sum (forward), then each row's loss */
  float *tl;         /* [N] the target's logit (forward) */
  float scale;       /* backward: dloss / N */
  _Atomic int bad;   /* a target outside [0, V) */
} CeRows;

static void fwd_rows(void **args, const int64_t *scalars, int64_t begin, int64_t end) {
  (void)scalars;
  CeRows *c = args[0];
  const MplCe *a = c->a;
  for (int64_t r = begin; r < end; r++) {
    float *l = c->L + r * c->cc;
    if (a->bf16)
      for (int64_t j = 0; j < c->cc; j++) l[j] = round_bf16(l[j]);
    float mc = -INFINITY;
    for (int64_t j = 0; j < c->cc; j++) mc = l[j] > mc ? l[j] : mc;
    float m = c->m[r], mn = mc > m ? mc : m;
    float sum = 0;
    for (int64_t j = 0; j < c->cc; j++) sum += expf(l[j] - mn);
    c->s[r] = (m == -INFINITY ? 0.0 : c->s[r] * exp((double)m - (double)mn)) + (double)sum;
    c->m[r] = mn;
    int64_t t = a->targets[r];
    if (t < 0 || t >= a->V) atomic_store(&c->bad, 1);
    else if (t >= c->c0 && t < c->c0 + c->cc) c->tl[r] = l[t - c->c0];
  }
}

static void bwd_rows(void **args, const int64_t *scalars, int64_t begin, int64_t end) {
  (void)scalars;
  CeRows *c = args[0];
  const MplCe *a = c->a;
  for (int64_t r = begin; r < end; r++) {
    float *l = c->L + r * c->cc, lse = a->lse[r];
    int64_t t = a->targets[r];
    if (t < 0 || t >= a->V) atomic_store(&c->bad, 1);
    for (int64_t j = 0; j < c->cc; j++) {
      float x = a->bf16 ? round_bf16(l[j]) : l[j];
      float g = (expf(x - lse) - (c->c0 + j == t ? 1.0f : 0.0f)) * c->scale;
      l[j] = a->bf16 ? round_bf16(g) : g;
    }
  }
}

/* C = alpha op(A) op(B) + beta C through gemm.c, in bf16 units where the step's are. */
static int gemm(const MplCe *a, MplGemmBf16 *bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, MplErr *err) {
  int rc = a->bf16 && bf16 ? mpl_gemm_bf16_batched(bf16, ta, tb, M, N, K, 1.0f, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1)
                           : mpl_gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  if (rc != MPL_OK)
    return mpl_errf(err, "cpu: the cross-entropy's product [%lld x %lld x %lld] failed", (long long)M, (long long)N,
                    (long long)K);
  return MPL_OK;
}

/* The chunk's logits L [N, cc] = x w_chunk^T (w [V, K], tb) or x w[:, chunk] (w [K, V]). */
static int chunk_logits(const MplCe *a, MplGemmBf16 *bf16, int64_t c0, int64_t cc, float *L, MplErr *err) {
  if (a->tb) return gemm(a, bf16, false, true, a->N, cc, a->K, a->x, a->K, a->w + c0 * a->K, a->K, 0.0f, L, cc, err);
  return gemm(a, bf16, false, false, a->N, cc, a->K, a->x, a->K, a->w + c0, a->V, 0.0f, L, cc, err);
}

int mpl_ce_cpu(const MplCe *a, bool backward, float *scratch, MplGemmBf16 *bf16, MplCeRowsFn rows, void *ctx,
               MplErr *err) {
  if (a->N < 1 || a->K < 1 || a->V < 1 || a->chunk < 1 || a->chunk > a->V)
    return mpl_errf(err, "cross-entropy: bad sizes N %lld K %lld V %lld chunk %lld", (long long)a->N, (long long)a->K,
                    (long long)a->V, (long long)a->chunk);
  /* the scratch: s (N doubles), m and tl (N floats each), then L [N, chunk] */
  if (((uintptr_t)scratch & 7u) != 0) return mpl_errf(err, "cross-entropy: misaligned scratch");
  CeRows c = {.a = a, .s = (double *)(void *)scratch};
  c.m = scratch + 2 * a->N;
  c.tl = c.m + a->N;
  c.L = c.tl + a->N;
  void *args[1] = {&c};
  if (backward) c.scale = (float)((double)a->dloss[0] / (double)a->N);
  for (int64_t i = 0; !backward && i < a->N; i++) c.m[i] = -INFINITY, c.s[i] = 0, c.tl[i] = 0;
  for (int64_t c0 = 0; c0 < a->V; c0 += a->chunk) {
    c.c0 = c0, c.cc = a->V - c0 < a->chunk ? a->V - c0 : a->chunk;
    if (chunk_logits(a, bf16, c0, c.cc, c.L, err) != MPL_OK) return MPL_ERR;
    if (rows(ctx, backward ? bwd_rows : fwd_rows, args, a->N, err) != MPL_OK) return MPL_ERR;
    if (atomic_load(&c.bad)) return mpl_errf(err, "cross-entropy: a target outside [0, %lld)", (long long)a->V);
    if (!backward) continue;
    /* dx (+)= G w_chunk: w_chunk [cc, K] (tb), or [K, cc] read transposed */
    if (gemm(a, bf16, false, !a->tb, a->N, a->K, c.cc, c.L, c.cc, a->tb ? a->w + c0 * a->K : a->w + c0,
             a->tb ? a->K : a->V, c0 ? 1.0f : 0.0f, a->dx, a->K, err) != MPL_OK)
      return MPL_ERR;
    /* dw_chunk = G^T x [cc, K] (tb), or x^T G [K, cc] in w's columns */
    int rc = a->tb ? gemm(a, bf16, true, false, c.cc, a->K, a->N, c.L, c.cc, a->x, a->K, 0.0f, a->dw + c0 * a->K, a->K, err)
                   : gemm(a, bf16, true, false, a->K, c.cc, a->N, a->x, a->K, c.L, c.cc, 0.0f, a->dw + c0, a->V, err);
    if (rc != MPL_OK) return MPL_ERR;
  }
  if (backward) return MPL_OK;
  double loss = 0;
  for (int64_t r = 0; r < a->N; r++) {
    float lse = (float)((double)c.m[r] + log(c.s[r]));
    a->lse[r] = lse;
    loss += (double)lse - (double)c.tl[r];
  }
  a->loss[0] = (float)(loss / (double)a->N);
  return MPL_OK;
}
