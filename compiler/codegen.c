/*
 * codegen.c — the code generation pass: the job's kernels through both emitters,
 * LLVM bitcode for the CPU (cg_llvm.c) and CUDA C compiled to PTX by NVRTC for the
 * GPU (cg_cuda.c). It runs only when a job is written (-o); --emit=llvm and
 * --emit=cuda print the emitters' text instead.
 *
 * PTX is made only for an architecture asked for (mplc --gpu-arch): NVRTC took half of
 * mplc's time on a small model (0.45 of 0.98 s for tests/e2e/tiny_lm.mpl, 2-core Zen 4),
 * paid by every compile though most jobs run on CPUs, and mplrun compiles the job's CUDA C
 * for the GPU it finds when the job has no PTX (or PTX its driver refuses).
 *
 * Invariant: what it returns lives in the compilation's arena; an emitter's failure
 * is one diagnostic ("LLVM: ...", "NVRTC: ..." with the log) and nothing else runs
 * after it; so is an architecture asked for in a build without CUDA.
 */
#include "kernel.h"

#include <stdlib.h>
#include <string.h>

/* A malloc'd block of len bytes as an arena copy with a NUL after it. */
static void *arena_take(Arena *a, void *p, size_t len) {
  char *c = arena_alloc(a, len + 1);
  memcpy(c, p, len);
  free(p);
  return c;
}

int cg_kernels(Diag *d, Arena *a, const KernelSet *ks, const char *gpu_arch, KernelCode *out) {
  *out = (KernelCode){0};
  char err[4096];
  void *bc = NULL;
  size_t len = 0;
  if (cg_llvm_module(ks, &bc, &len, err, sizeof err)) {
    diag_error_noloc(d, "LLVM: %s", err);
    return 1;
  }
  out->llvm_bc = arena_take(a, bc, len), out->llvm_bc_len = len;
  out->cuda_src = cg_cuda_source(a, ks);
  out->cuda_src_len = strlen(out->cuda_src);
  if (!gpu_arch) return 0;
  char *ptx = NULL;
  size_t plen = 0;
  int rc = cg_nvrtc_compile(out->cuda_src, gpu_arch, &ptx, &plen, err, sizeof err);
  if (rc == CG_NVRTC_UNAVAILABLE) {
    diag_error_noloc(d, "--gpu-arch %s: this mplc was built without CUDA (no NVRTC to make PTX)", gpu_arch);
    return 1;
  }
  if (rc != 0) {
    diag_error_noloc(d, "%s", err);
    return 1;
  }
  out->ptx = arena_take(a, ptx, plen), out->ptx_len = plen;
  return 0;
}
