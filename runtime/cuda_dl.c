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
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpl.h" /* the compile cache */

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
  SYM(version, "nvrtcVersion");
}

int mpl_nvrtc_load(char *err, size_t errlen) {
  pthread_once(&once, load_once);
  if (!failure[0]) return 0;
  snprintf(err, errlen, "NVRTC: %s", failure);
  return -1;
}

/* The cache's context: NVRTC's version and library file, the file's name, the options (malloc'd). */
static char *nvrtc_context(const char *file, const char *const *opts, int nopts) {
  int major = 0, minor = 0;
  if (!mpl_nvrtc.version || mpl_nvrtc.version(&major, &minor) != NVRTC_SUCCESS) return NULL;
  char lib[PATH_MAX + 128];
  mpl_kcache_lib_id((const void *)(uintptr_t)mpl_nvrtc.compile, lib, sizeof lib); /* (a patch release: the same major.minor) */
  size_t n = strlen(file) + strlen(lib) + 64;
  for (int i = 0; i < nopts; i++) n += strlen(opts[i]) + 1;
  char *c = malloc(n), *at = c;
  if (!c) return NULL;
  at += sprintf(at, "nvrtc 1; NVRTC %d.%d (%s); %s;", major, minor, lib, file);
  for (int i = 0; i < nopts; i++) at += sprintf(at, " %s", opts[i]);
  return c;
}

bool mpl_nvrtc_cache_get(const char *src, const char *file, const char *const *opts, int nopts, uint8_t **entry,
                         const char **log, const char **ptx, int *lock) {
  char *ctx = nvrtc_context(file, opts, nopts);
  size_t n = 0;
  if (lock) *lock = -1;
  uint8_t *e = !ctx ? NULL
               : lock ? mpl_kcache_get_locked("ptx", ctx, src, strlen(src), &n, lock)
                      : mpl_kcache_get("ptx", ctx, src, strlen(src), &n);
  free(ctx);
  const uint8_t *nul = e ? memchr(e, 0, n) : NULL;
  if (!nul || nul + 1 >= e + n || e[n - 1] != 0 || memchr(nul + 1, 0, (size_t)(e + n - 1 - (nul + 1)))) {
    mpl_free(e); /* (not two texts: a miss) */
    return false;
  }
  *entry = e, *log = (const char *)e, *ptx = (const char *)nul + 1;
  return true;
}

void mpl_nvrtc_cache_put(const char *src, const char *file, const char *const *opts, int nopts, const char *log,
                         const char *ptx) {
  char *ctx = nvrtc_context(file, opts, nopts);
  size_t nl = strlen(log) + 1, np = strlen(ptx) + 1;
  char *e = ctx ? malloc(nl + np) : NULL;
  if (e) {
    memcpy(e, log, nl), memcpy(e + nl, ptx, np);
    mpl_kcache_put("ptx", ctx, src, strlen(src), e, nl + np);
  }
  free(e), free(ctx);
}

#endif
