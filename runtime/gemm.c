/*
 * gemm.c — the CPU matrix product: one small interface over oneDNN's dnnl_sgemm
 * (row-major, C = alpha * op(A) * op(B) + beta * C), plus a strided-batched loop; and
 * precision = bf16's products (operands that hold bf16 values) through oneDNN's
 * dnnl_gemm_bf16bf16f32 where the CPU has bf16 instructions.
 *
 * Why oneDNN: on this project's AVX-512 hosts it measured 155-174 GFLOP/s per core against
 * ~32 for Debian's OpenBLAS fallback kernel.
 *
 * Invariants:
 *  - narrow products (N <= 16) run in gemm_narrow (plain C, k in order);
 *  - a K of 2 * KSPLIT or more goes in chunks of K, their products summed in order (gemm_ksplit);
 *  - the result depends only on the arguments and on the calling thread's GEMM thread
 *    count (oneDNN partitions statically), so two identical calls give identical bits;
 *  - a bf16 product runs in bf16 units only on a CPU with avx512_bf16 (looked up at run
 *    time, as is oneDNN's entry point), for shapes large enough to pay for converting the
 *    operands (a rule on the shape alone, never a timing), unless MPL_CPU_BF16=0;
 *    otherwise it is the f32 product, whose result differs only in the order of the sums
 *    (a product of two bf16 values is exact in f32);
 *  - a batch whose B is shared (stride 0) over A's and C's stacked rows is one product of
 *    batch x M rows, f32 or bf16 (a linear layer over [B, T, d]): oneDNN packs B once, not per batch
 *    (gpt-384's [256 x 384] x [384 x 1536]^T, 8 batches: 102 -> 112 GFLOP/s on one Zen 4 thread);
 *  - Debian's libdnnl threads with OpenMP (libgomp). omp_set_num_threads changes an ICV
 *    of the calling thread only, so each rank thread can pick its own count. It is looked
 *    up with dlsym in the already-loaded libgomp (device_cpu.c's kernels share its team).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mpl.h"

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

/* The leading dimensions dnnl_sgemm needs for a row-major op(X) of rows x cols. */
static bool ld_ok(bool trans, int64_t rows, int64_t cols, int64_t ld) {
  int64_t stored_cols = trans ? rows : cols;
  return ld >= (stored_cols > 1 ? stored_cols : 1);
}

/*
 * Narrow products (N <= NARROW, a classifier's logits and their weight gradient): oneDNN
 * runs these at a few GFLOP/s. Here: op(B) copied to a [K, NARROW] panel, then ROWS rows
 * of C at a time, each element summed over k in order (acc = acc + a*b, no FMA), so the
 * bits depend on nothing but the arguments.
 */
enum { NARROW = 16, ROWS = 4 };
typedef float Lanes __attribute__((vector_size(NARROW * sizeof(float))));

/* (avx512f: one register per row; the same operations either way, so the same bits) */
__attribute__((target_clones("avx512f", "default"))) static void narrow_rows(bool ta, int64_t i, int nr, int64_t K,
                                                                             const float *A, int64_t lda,
                                                                             const Lanes *panel, Lanes *acc) {
  Lanes c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
  if (nr == ROWS && ta) {
    for (int64_t k = 0; k < K; k++) {
      const float *a = A + k * lda + i;
      Lanes b = panel[k];
      c0 = c0 + a[0] * b, c1 = c1 + a[1] * b, c2 = c2 + a[2] * b, c3 = c3 + a[3] * b;
    }
  } else if (nr == ROWS) {
    const float *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    for (int64_t k = 0; k < K; k++) {
      Lanes b = panel[k];
      c0 = c0 + a0[k] * b, c1 = c1 + a1[k] * b, c2 = c2 + a2[k] * b, c3 = c3 + a3[k] * b;
    }
  } else {
    for (int r = 0; r < nr; r++) {
      Lanes c = {0};
      for (int64_t k = 0; k < K; k++) c = c + (ta ? A[k * lda + i + r] : A[(i + r) * lda + k]) * panel[k];
      acc[r] = c;
    }
    return;
  }
  acc[0] = c0, acc[1] = c1, acc[2] = c2, acc[3] = c3;
}

static int gemm_narrow(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  Lanes *panel = mpl_malloc(sizeof(Lanes) * (size_t)(K ? K : 1));
  if (!panel) return MPL_ERR;
  for (int64_t k = 0; k < K; k++) {
    Lanes v = {0};
    for (int64_t n = 0; n < N; n++) v[n] = tb ? B[n * ldb + k] : B[k * ldb + n];
    panel[k] = v;
  }
  Lanes acc[ROWS];
  for (int64_t i = 0; i < M; i += ROWS) {
    int nr = M - i < ROWS ? (int)(M - i) : ROWS;
    narrow_rows(ta, i, nr, K, A, lda, panel, acc);
    for (int r = 0; r < nr; r++)
      for (int64_t n = 0; n < N; n++) {
        float v = alpha == 1.0f ? acc[r][n] : alpha * acc[r][n];
        float *c = &C[(i + r) * ldc + n];
        *c = beta == 0.0f ? v : v + beta * *c;
      }
  }
  mpl_free(panel);
  return MPL_OK;
}

/*
 * A product whose K is very long (a weight gradient over a million rows): one accumulator
 * an element over all of K lost precision (1.6e-3 of the largest at K = 2^20, m = 1;
 * oneDNN's and gemm_narrow's alike; adding a chunk's product into C with beta = 1 does
 * not help, the product then starts its chain from C). K is cut into chunks of KSPLIT
 * (the last to K), each chunk's product made on its own and added to a sum R in order,
 * then C = alpha * R + beta * C: an element meets about KSPLIT + K / KSPLIT roundings, not
 * K. A block of C's rows at a time, so the two scratch blocks stay within 4 MiB each.
 * Below 2 * KSPLIT a product keeps its bits.
 */
enum { KSPLIT = 1 << 14, KSPLIT_SCRATCH = 1 << 20 /* floats a block */ };

static int gemm_ksplit(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  int64_t m = K / KSPLIT, rows = N < KSPLIT_SCRATCH ? KSPLIT_SCRATCH / N : 1;
  if (rows > M) rows = M;
  float *R = mpl_malloc(sizeof(float) * (size_t)(rows * N)), *x = mpl_malloc(sizeof(float) * (size_t)(rows * N));
  int st = R && x ? MPL_OK : MPL_ERR;
  for (int64_t i0 = 0; i0 < M && st == MPL_OK; i0 += rows) {
    int64_t r = M - i0 < rows ? M - i0 : rows;
    for (int64_t j = 0; j < m && st == MPL_OK; j++) {
      int64_t kb = j * KSPLIT, kn = j == m - 1 ? K - kb : KSPLIT;
      const float *a = ta ? A + kb * lda + i0 : A + i0 * lda + kb, *b = tb ? B + kb : B + kb * ldb;
      st = mpl_gemm_f32(ta, tb, r, N, kn, 1.0f, a, lda, b, ldb, 0.0f, j ? x : R, N);
      for (int64_t e = 0; j && st == MPL_OK && e < r * N; e++) R[e] = R[e] + x[e];
    }
    for (int64_t i = 0; i < r && st == MPL_OK; i++)
      for (int64_t n = 0; n < N; n++) {
        float v = alpha == 1.0f ? R[i * N + n] : alpha * R[i * N + n], *c = &C[(i0 + i) * ldc + n];
        *c = beta == 0.0f ? v : v + beta * *c;
      }
  }
  mpl_free(R), mpl_free(x);
  return st;
}

int mpl_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M < 0 || N < 0 || K < 0 || !ld_ok(ta, M, K, lda) || !ld_ok(tb, K, N, ldb) || !ld_ok(false, M, N, ldc))
    return MPL_ERR;
  if (M == 0 || N == 0) return MPL_OK;
  if (K >= 2 * KSPLIT) return gemm_ksplit(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (N <= NARROW && K >= 64 && !ta) return gemm_narrow(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  dnnl_status_t s = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return s == dnnl_success ? MPL_OK : MPL_ERR;
}

/* A batch whose B is shared (sb = 0) and whose A and C rows stack (dense, matrix after matrix):
 * one product of batch x M rows instead (f32, bf16 and stored-bf16 products alike). */
static bool shared_b(bool ta, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t sa, int64_t sb, int64_t ldc,
                     int64_t sc, int64_t batch) {
  return batch > 1 && sb == 0 && !ta && lda == K && sa == M * K && ldc == N && sc == M * N;
}

/* *buf grown to hold n elements of size each (its old contents dropped); false when out of memory. */
static bool grow(void **buf, size_t *cap, size_t n, size_t size) {
  if (n <= *cap) return true;
  void *b = mpl_malloc(n * size);
  if (!b) return false;
  mpl_free(*buf);
  *buf = b, *cap = n;
  return true;
}

int mpl_gemm_f32_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta, float *C,
                         int64_t ldc, int64_t sc, int64_t batch) {
  if (batch < 0 || sa < 0 || sb < 0 || sc < 0 || (batch > 1 && sc == 0 && M > 0 && N > 0)) return MPL_ERR;
  if (shared_b(ta, M, N, K, lda, sa, sb, ldc, sc, batch))
    return mpl_gemm_f32(ta, tb, M * batch, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  for (int64_t i = 0; i < batch; i++)
    if (mpl_gemm_f32(ta, tb, M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc))
      return MPL_ERR;
  return MPL_OK;
}

void mpl_gemm_set_threads(int n) {
  void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
  if (set && n > 0) set(n);
}

/* ---- bf16 products ------------------------------------------------------------------------
 * Measured on this project's Zen 4 host (one thread, f32 operands holding bf16 values,
 * dnnl_sgemm against conversion + dnnl_gemm_bf16bf16f32): 2048x768x768 32.3 -> 15.6 ms
 * (2.06x), 2048x3072x768 128 -> 64 ms (1.99x), 8192x768x768 130 -> 68 ms (1.93x),
 * 256x256x128 0.227 -> 0.131 ms (1.73x), 128x128x64 1.22x, 64x512x512 1.00x, 64x64x64
 * 0.84x: the conversion (reading 4 bytes, writing 2, per operand element) pays when each
 * converted element feeds enough products: 2MN / (M + N) >= 96, and M*N*K >= 2^20. */

typedef dnnl_status_t (*GemmBf16Fn)(char ta, char tb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K, float alpha,
                                    const uint16_t *A, dnnl_dim_t lda, const uint16_t *B, dnnl_dim_t ldb,
                                    float beta, float *C, dnnl_dim_t ldc);

static GemmBf16Fn bf16_entry(void) {
  /* in libdnnl since 1.x but not in its public header; looked up, so a library without it
     leaves the f32 product */
  return (GemmBf16Fn)dlsym(RTLD_DEFAULT, "dnnl_gemm_bf16bf16f32");
}

bool mpl_gemm_bf16_hw(void) {
  const char *env = getenv("MPL_CPU_BF16");
  if (env && !strcmp(env, "0")) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && bf16_entry() != NULL;
}

void mpl_gemm_bf16_init(MplGemmBf16 *w) { *w = (MplGemmBf16){.hw = mpl_gemm_bf16_hw()}; }

void mpl_gemm_bf16_free(MplGemmBf16 *w) {
  mpl_free(w->buf);
  mpl_free(w->wide);
  *w = (MplGemmBf16){0};
}

/* (a K gemm_ksplit cuts goes to the f32 product, which cuts it: bf16 units sum a product's
   whole K in one chain) */
static bool bf16_pays(int64_t M, int64_t N, int64_t K) {
  return M * N >= 48 * (M + N) && M * N * K >= (1 << 20) && K < 2 * KSPLIT;
}

/* The upper halves of n floats that hold bf16 values: their bf16 bits, exactly (16 at a
 * time; avx512f: one shift and one narrowing move per 16). */
typedef uint32_t Words __attribute__((vector_size(16 * sizeof(uint32_t))));
typedef uint16_t Halves __attribute__((vector_size(16 * sizeof(uint16_t))));

__attribute__((target_clones("avx512f", "default"))) static void to_bf16(const float *x, uint16_t *y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Words w;
    memcpy(&w, x + i, sizeof w);
    Halves h = __builtin_convertvector(w >> 16, Halves);
    memcpy(y + i, &h, sizeof h);
  }
  for (; i < n; i++) {
    uint32_t u;
    memcpy(&u, x + i, sizeof u);
    y[i] = (uint16_t)(u >> 16);
  }
}

int mpl_gemm_bf16_batched(MplGemmBf16 *w, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb,
                          float beta, float *C, int64_t ldc, int64_t sc, int64_t batch) {
  if (shared_b(ta, M, N, K, lda, sa, sb, ldc, sc, batch))
    return mpl_gemm_bf16_batched(w, ta, tb, M * batch, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
  GemmBf16Fn fn = w->hw ? bf16_entry() : NULL;
  bool dense = lda == (ta ? M : K) && ldb == (tb ? K : N);
  if (!fn || !dense || !bf16_pays(M, N, K) || batch < 1 || (batch > 1 && sc == 0))
    return mpl_gemm_f32_batched(ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
  if (!grow((void **)&w->buf, &w->cap, (size_t)(M * K + K * N), sizeof(uint16_t))) return MPL_ERR;
  uint16_t *a16 = w->buf, *b16 = w->buf + M * K;
  for (int64_t i = 0; i < batch; i++) {
    if (i == 0 || sa) to_bf16(A + i * sa, a16, M * K);
    if (i == 0 || sb) to_bf16(B + i * sb, b16, K * N);
    if (fn(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, a16, lda, b16, ldb, beta, C + i * sc, ldc) != dnnl_success)
      return MPL_ERR;
    w->units++;
  }
  return MPL_OK;
}

/* ---- operands stored as bf16 -------------------------------------------------------------- */

/* The elements a row-major [rows, cols] operand with leading dimension ld spans. */
static int64_t span(int64_t rows, int64_t cols, int64_t ld) { return (rows - 1) * ld + cols; }

int mpl_gemm_bf16s_batched(MplGemmBf16 *w, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const uint16_t *A, int64_t lda, int64_t sa, const uint16_t *B, int64_t ldb, int64_t sb,
                           float beta, float *C, int64_t ldc, int64_t sc, int64_t batch) {
  if (M < 0 || N < 0 || K < 0 || batch < 0 || sa < 0 || sb < 0 || sc < 0 || (batch > 1 && sc == 0 && M > 0 && N > 0) ||
      !ld_ok(ta, M, K, lda) || !ld_ok(tb, K, N, ldb) || !ld_ok(false, M, N, ldc))
    return MPL_ERR;
  if (M == 0 || N == 0 || batch == 0) return MPL_OK;
  if (shared_b(ta, M, N, K, lda, sa, sb, ldc, sc, batch))
    return mpl_gemm_bf16s_batched(w, ta, tb, M * batch, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
  GemmBf16Fn fn = w->hw ? bf16_entry() : NULL;
  bool dense = lda == (ta ? M : K) && ldb == (tb ? K : N);
  /* the same choice as for f32 arrays (bf16_pays: a rule on the shape), so a product's bits
     do not depend on how its operands are stored (a value crossing stages stays f32) */
  if (fn && dense && bf16_pays(M, N, K)) {
    for (int64_t i = 0; i < batch; i++) {
      if (fn(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc) !=
          dnnl_success)
        return MPL_ERR;
      w->units++;
    }
    return MPL_OK;
  }
  int64_t na = span(ta ? K : M, ta ? M : K, lda), nb = span(tb ? N : K, tb ? K : N, ldb);
  if (!grow((void **)&w->wide, &w->wcap, (size_t)(na + nb), sizeof(float))) return MPL_ERR;
  float *a32 = w->wide, *b32 = w->wide + na;
  for (int64_t i = 0; i < batch; i++) {
    if (i == 0 || sa) mpl_bf16_widen(A + i * sa, a32, na);
    if (i == 0 || sb) mpl_bf16_widen(B + i * sb, b32, nb);
    if (mpl_gemm_f32(ta, tb, M, N, K, alpha, a32, lda, b32, ldb, beta, C + i * sc, ldc)) return MPL_ERR;
  }
  return MPL_OK;
}
