/*
 * cpu_none.c — the CPU pieces a CUDA-only mplrun leaves out (`make cuda-only`, for GPU
 * machines without LLVM or oneDNN): the JIT (jit_cpu.c) and the matrix product
 * (gemm.c) answer with an error, so the `cpu` device fails cleanly there while the
 * `cuda` device works. Built only into the cuda-only mplrun; never linked with
 * jit_cpu.c or gemm.c.
 *
 * Invariant: the same signatures as jit_cpu.h and mpl.h's gemm section.
 */
#include <stdio.h>

#include "jit_cpu.h"
#include "mpl.h"

MplJit *mpl_jit_load(const void *bc, size_t len, char *err, size_t errlen) {
  (void)bc, (void)len;
  snprintf(err, errlen, "this mplrun was built for CUDA only (no LLVM): use --devices cuda");
  return NULL;
}

void *mpl_jit_lookup(MplJit *j, const char *name) {
  (void)j, (void)name;
  return NULL;
}

void mpl_jit_free(MplJit *j) { (void)j; }

int mpl_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  return MPL_ERR; /* no CPU GEMM in a CUDA-only build */
}

int mpl_gemm_f32_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta, float *C,
                         int64_t ldc, int64_t sc, int64_t batch) {
  return MPL_ERR;
}

void mpl_gemm_set_threads(int n) { (void)n; }

bool mpl_gemm_bf16_hw(void) { return false; }
void mpl_gemm_bf16_init(MplGemmBf16 *w) { *w = (MplGemmBf16){0}; }
void mpl_gemm_bf16_free(MplGemmBf16 *w) { (void)w; }

int mpl_gemm_bf16_batched(MplGemmBf16 *w, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb,
                          float beta, float *C, int64_t ldc, int64_t sc, int64_t batch) {
  return MPL_ERR;
}

int mpl_gemm_bf16s_batched(MplGemmBf16 *w, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const uint16_t *A, int64_t lda, int64_t sa, const uint16_t *B, int64_t ldb, int64_t sb,
                           float beta, float *C, int64_t ldc, int64_t sc, int64_t batch) {
  return MPL_ERR;
}
