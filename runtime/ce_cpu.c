/*
 * ce_cpu.c — the fused cross-entropy (issue 14, item 3; JS_CE) on the CPU: a product's logits,
 * their cross_entropy and its gradient for dloss = 1 over blocks of rows, never more than one
 * [rows, V] block of logits in memory (the scratch, which the caller owns).
 *
 * For each block of rows [r0, r0 + rr): the logits L = x_block w^T by the CPU GEMM (gemm.c;
 * bf16 units when the job's precision is bf16), then per row the max m, e = exp(L - m) in
 * place (one exponential per logit), s = sum e (in double, in order), the row's loss
 * m + log s - L[target] and, in place, G = (e / s - onehot(target)) / N; then dx1_block =
 * G w and dw1 (+)= G^T x_block (or x_block^T G for w [K, V]), both by the GEMM: three
 * products of the logits' size in all, as the unfused product and CE_GRAD's two. The loss
 * is the mean of the rows' losses, summed in order in double. The backward (the MULs by
 * dloss) is the job's kernels. Under bf16 each block of L is rounded to bf16 (as a
 * product's result is) before the softmax, and G before its products.
 *
 * The row loops run as MplKernelFn units over the block's rows through the caller's rows
 * callback (the cpu device's OpenMP team): each row is one unit's alone and its sums run in a
 * fixed order, so the bits depend on neither the thread count nor the split; the GEMMs are
 * gemm.c's. The block is the job's (mplc's choice, mpl_ce_block_rows): dw1's sum over the
 * blocks depends on it.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"


int64_t mpl_ce_cpu_scratch(const MplCe *a) { return mpl_ce_scratch_floats(a->chunk, a->V, a->N, a->in16); }

/* One block's row work: the state of the whole step, the block's place. */
typedef struct CeRows {
  const MplCe *a;
  float *L;          /* [rr, V] this block's logits, then G in place */
  uint16_t *L16;     /* in16: G's bf16 bits too (its products read them), else NULL */
  int64_t r0;        /* the block's first row */
  double *loss;      /* [N] each row's loss */
  float scale;       /* 1 / N */
  _Atomic int bad;   /* a target outside [0, V) */
} CeRows;

static void ce_rows(void **args, const int64_t *scalars, int64_t begin, int64_t end) {
  (void)scalars;
  CeRows *c = args[0];
  const MplCe *a = c->a;
  int64_t V = a->V;
  for (int64_t i = begin; i < end; i++) {
    float *l = c->L + i * V;
    int64_t r = c->r0 + i, t = a->targets[r];
    if (a->bf16)
      for (int64_t j = 0; j < V; j++) l[j] = mpl_bf16_round(l[j]);
    float mx = -INFINITY;
    for (int64_t j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
    if (t < 0 || t >= V) {
      atomic_store(&c->bad, 1);
      t = 0;
    }
    float lt = l[t];
    double sum = 0; /* e = exp(L - max) in place, summed in order */
    for (int64_t j = 0; j < V; j++) {
      float e = expf(l[j] - mx);
      l[j] = e;
      sum += (double)e;
    }
    c->loss[r] = (double)mx + log(sum) - (double)lt;
    /* g = (e / sum - onehot) / N: the softmax from the exponentials already made */
    float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < V; j++) {
      float g = (l[j] * inv - (j == t ? 1.0f : 0.0f)) * c->scale;
      l[j] = a->bf16 ? mpl_bf16_round(g) : g;
      if (c->L16) {
        uint32_t u;
        memcpy(&u, &l[j], 4);
        c->L16[i * V + j] = (uint16_t)(u >> 16);
      }
    }
  }
}

/* C = op(A) op(B) + beta C through gemm.c, in bf16 units where the step's are; A and B f32,
 * or stored as bf16 when the step's inputs are (in16: the bits of the same values in f32). */
static int gemm(const MplCe *a, MplGemmBf16 *bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A,
                int64_t lda, const void *B, int64_t ldb, float beta, float *C, int64_t ldc, MplErr *err) {
  int rc = a->in16              ? mpl_gemm_bf16s_batched(bf16, ta, tb, M, N, K, 1.0f, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1)
           : a->bf16 && bf16 ? mpl_gemm_bf16_batched(bf16, ta, tb, M, N, K, 1.0f, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1)
                             : mpl_gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  if (rc != MPL_OK)
    return mpl_errf(err, "cpu: the cross-entropy's product [%lld x %lld x %lld] failed", (long long)M, (long long)N,
                    (long long)K);
  return MPL_OK;
}

int mpl_ce_cpu(const MplCe *a, float *scratch, MplGemmBf16 *bf16, MplCeRowsFn rows, void *ctx, MplErr *err) {
  if (a->N < 1 || a->K < 1 || a->V < 1 || a->chunk < 1 || a->chunk > a->N)
    return mpl_errf(err, "cross-entropy: bad sizes N %lld K %lld V %lld rows %lld", (long long)a->N, (long long)a->K,
                    (long long)a->V, (long long)a->chunk);
  /* the scratch: each row's loss (N doubles), then L [chunk, V] */
  if (((uintptr_t)scratch & 7u) != 0) return mpl_errf(err, "cross-entropy: misaligned scratch");
  CeRows c = {.a = a, .loss = (double *)(void *)scratch, .scale = (float)(1.0 / (double)a->N)};
  c.L = scratch + 2 * a->N;
  if (a->in16 && (!bf16 || !a->bf16)) return mpl_errf(err, "cross-entropy: bf16 inputs outside a bf16 step");
  c.L16 = a->in16 ? (uint16_t *)(void *)(c.L + a->chunk * a->V) : NULL;
  void *args[1] = {&c};
  int64_t K = a->K, V = a->V;
  /* the products' operands: f32, or their bf16 copies (in16: x's, w's and G's) */
  size_t es = a->in16 ? 2 : 4;
  const char *x = a->in16 ? (const void *)a->x16 : (const void *)a->x;
  const void *w = a->in16 ? (const void *)a->w16 : (const void *)a->w, *G = a->in16 ? (const void *)c.L16 : c.L;
  int64_t ldw = a->tb ? K : V;
  for (int64_t r0 = 0; r0 < a->N; r0 += a->chunk) {
    int64_t rr = a->N - r0 < a->chunk ? a->N - r0 : a->chunk;
    const void *xb = x + (size_t)(r0 * K) * es;
    c.r0 = r0;
    /* L [rr, V] = x_block w^T (w [V, K]) or x_block w (w [K, V]) */
    if (gemm(a, bf16, false, a->tb, rr, V, K, xb, K, w, ldw, 0.0f, c.L, V, err) != MPL_OK) return MPL_ERR;
    if (rows(ctx, ce_rows, args, rr, err) != MPL_OK) return MPL_ERR;
    if (atomic_load(&c.bad)) return mpl_errf(err, "cross-entropy: a target outside [0, %lld)", (long long)V);
    /* dx1_block = G w: w [V, K] (tb), or [K, V] read transposed */
    if (gemm(a, bf16, false, !a->tb, rr, K, V, G, V, w, ldw, 0.0f, a->dx + r0 * K, K, err) != MPL_OK) return MPL_ERR;
    /* dw1 (+)= G^T x_block [V, K] (tb), or x_block^T G [K, V] */
    float beta = r0 ? 1.0f : 0.0f;
    int rc = a->tb ? gemm(a, bf16, true, false, V, K, rr, G, V, xb, K, beta, a->dw, K, err)
                   : gemm(a, bf16, true, false, K, V, rr, xb, K, G, V, beta, a->dw, V, err);
    if (rc != MPL_OK) return MPL_ERR;
  }
  double loss = 0;
  for (int64_t r = 0; r < a->N; r++) loss += c.loss[r];
  a->loss[0] = (float)(loss / (double)a->N);
  return MPL_OK;
}
