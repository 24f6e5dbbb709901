/*
 * cuda_dl.c — NVRTC opened the first time a kernel is compiled, not when a process starts.
 * Linked, libnvrtc cost every mplc and mplrun 35 ms at start (an empty C program linked with
 * -lnvrtc: 39 ms a run against 4 ms without, on a 2-core Zen 4 VM), paid by CPU compiles and
 * runs that never compile CUDA, by each rank of an mpirun, and by the test suite's thousands
 * of starts. Both binaries keep the toolkit's lib64 in their run path, so the loader finds the
 * library where the build found it, as it did when NVRTC was linked. mpl_dlopen_cuda_lib is
 * the opening cublas_dl.c uses too (it also looks beside libcudart).
 *
 * Invariants: mpl_nvrtc is written once, inside pthread_once, before any load returns 0; after
 * a failed load every later one fails with the same message; the library is never closed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include "cuda_dl.h"

#ifdef MPL_HAVE_CUDA
#include <cuda.h> /* CUDA_VERSION: the toolkit built against, whose major is the soname's */

#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

void *mpl_dlopen_cuda_lib(const char *soname, const void *beside, char *err, size_t errlen) {
  void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (h) return h;
  char first[512], dir[4096] = "";
  snprintf(first, sizeof first, "%s", dlerror());
  Dl_info info;
  if (beside && dladdr(beside, &info) && info.dli_fname && strchr(info.dli_fname, '/')) {
    char path[4096];
    snprintf(path, sizeof path, "%s", info.dli_fname);
    snprintf(dir, sizeof dir, "%s", dirname(path));
    char full[8300];
    snprintf(full, sizeof full, "%s/%s", dir, soname);
    if ((h = dlopen(full, RTLD_NOW | RTLD_LOCAL))) return h;
  }
  snprintf(err, errlen, "cannot open %s: %s%s%s", soname, first, dir[0] ? "; nor in " : "", dir);
  return NULL;
}

MplNvrtc mpl_nvrtc;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char failure[640]; /* empty: loaded */

#define SYM(field, name)                                                                  \
  do {                                                                                    \
    if (!(*(void **)&mpl_nvrtc.field = dlsym(h, name))) {                                 \
      snprintf(failure, sizeof failure, "%s has no %s", soname, name);                    \
      mpl_nvrtc = (MplNvrtc){0};                                                          \
      return;                                                                             \
    }                                                                                     \
  } while (0)

static void load_once(void) {
  char soname[64];
  snprintf(soname, sizeof soname, "libnvrtc.so.%d", CUDA_VERSION / 1000);
  void *h = mpl_dlopen_cuda_lib(soname, NULL, failure, sizeof failure);
  if (!h) return;
  SYM(create, "nvrtcCreateProgram");
  SYM(compile, "nvrtcCompileProgram");
  SYM(destroy, "nvrtcDestroyProgram");
  SYM(log_size, "nvrtcGetProgramLogSize");
  SYM(log, "nvrtcGetProgramLog");
  SYM(ptx_size, "nvrtcGetPTXSize");
  SYM(ptx, "nvrtcGetPTX");
  SYM(error_string, "nvrtcGetErrorString");
}

int mpl_nvrtc_load(char *err, size_t errlen) {
  pthread_once(&once, load_once);
  if (!failure[0]) return 0;
  snprintf(err, errlen, "NVRTC: %s", failure);
  return -1;
}

#endif
