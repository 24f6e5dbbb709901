/*
 * cublas_dl.c — cuBLAS opened when the first cuda device is set up, not when a process
 * starts. Linking mplrun with -lcublas made every start load libcublasLt (540 MB) and run its
 * constructors: 0.36 s per process on a 2-core Zen 4 VM (an empty C program linked with
 * -lcublas: 0.36 s; without: 0.00 s), paid by every CPU run, every rank of an mpirun, and
 * the test suite's thousand-odd mplrun starts. So nothing links it: mpl_cublas_load opens
 * libcublas.so.<major> (the soname of the toolkit built against; the loader's search path,
 * then the folder libcudart was loaded from), once per process, and fills mpl_cublas with
 * the functions the cuda device calls, each declared by cublas_v2.h's prototype.
 *
 * Invariants: mpl_cublas is written once, inside pthread_once, before any load returns
 * MPL_OK; after a failed load every later one fails with the same message; the library is
 * never closed (its handles live until the process ends).
 */
#include "mpl.h"

#ifdef MPL_HAVE_CUDA
#include "cuda_rt.h"
#include "cuda_dev.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)
#define CUBLAS_SONAME "libcublas.so." STR(CUBLAS_VER_MAJOR)

MplCublas mpl_cublas;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char failure[512]; /* empty: loaded */

static void *open_cublas(void) {
  return mpl_dlopen_cuda_lib(CUBLAS_SONAME, (const void *)cudaGetErrorString, failure, sizeof failure);
}

#define SYM(field, name)                                                                          \
  do {                                                                                            \
    if (!(*(void **)&mpl_cublas.field = dlsym(h, name))) {                                        \
      snprintf(failure, sizeof failure, "%s has no %s", CUBLAS_SONAME, name);                     \
      return;                                                                                     \
    }                                                                                             \
  } while (0)

static void load_once(void) {
  void *h = open_cublas();
  if (!h) return;
  SYM(create, "cublasCreate_v2");
  SYM(destroy, "cublasDestroy_v2");
  SYM(set_stream, "cublasSetStream_v2");
  SYM(set_math_mode, "cublasSetMathMode");
  SYM(status_string, "cublasGetStatusString");
  SYM(sgemm, "cublasSgemm_v2");
  SYM(sgemm_strided, "cublasSgemmStridedBatched");
  SYM(gemm_ex, "cublasGemmEx");
  SYM(gemm_strided_ex, "cublasGemmStridedBatchedEx");
  SYM(saxpy, "cublasSaxpy_v2");
  SYM(set_workspace, "cublasSetWorkspace_v2");
}

int mpl_cublas_load(MplErr *err) {
  pthread_once(&once, load_once);
  if (failure[0]) return mpl_errf(err, "cuBLAS: %s", failure);
  return MPL_OK;
}

const char *mpl_cublas_status(cublasStatus_t s) {
  return mpl_cublas.status_string ? mpl_cublas.status_string(s) : "cuBLAS not loaded";
}

#endif
