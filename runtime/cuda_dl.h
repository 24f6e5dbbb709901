/*
 * cuda_dl.h — CUDA libraries opened when first needed, not linked (cuda_dl.c): NVRTC, for
 * mplc (a job's PTX) and mplrun (kernels compiled on the GPU machine), and the opening
 * itself, which cublas_dl.c shares. Only with MPL_HAVE_CUDA.
 */
#ifndef MPL_CUDA_DL_H
#define MPL_CUDA_DL_H
#ifdef MPL_HAVE_CUDA

#include <nvrtc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Opens the library `soname` (RTLD_NOW | RTLD_LOCAL): the loader's search path (the binary's
 * run path included) first, then the folder of the library that holds the address `beside`
 * (NULL: none). NULL on failure, with both reasons in err. */
void *mpl_dlopen_cuda_lib(const char *soname, const void *beside, char *err, size_t errlen);

/* The NVRTC functions MPL calls, each with nvrtc.h's prototype. */
typedef struct MplNvrtc {
  nvrtcResult (*create)(nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *);
  nvrtcResult (*compile)(nvrtcProgram, int, const char *const *);
  nvrtcResult (*destroy)(nvrtcProgram *);
  nvrtcResult (*log_size)(nvrtcProgram, size_t *);
  nvrtcResult (*log)(nvrtcProgram, char *);
  nvrtcResult (*ptx_size)(nvrtcProgram, size_t *);
  nvrtcResult (*ptx)(nvrtcProgram, char *);
  const char *(*error_string)(nvrtcResult);
  nvrtcResult (*version)(int *, int *);
} MplNvrtc;
extern MplNvrtc mpl_nvrtc;

/* Opens libnvrtc.so.<major> (the loader's search path) and fills mpl_nvrtc, once per process
 * (thread-safe): 0, or -1 with the reason in err (every later call gives the same answer). */
int mpl_nvrtc_load(char *err, size_t errlen);

/* NVRTC's PTX through the compile cache (kcache.c, kind "ptx"), under the source and a
 * context of NVRTC's version, the file name and the options. An entry is the log, a NUL,
 * the PTX, a NUL. get: true with *log and *ptx pointing into *entry (mpl_free it); put: keeps
 * a compile's log and PTX. NVRTC must be loaded (mpl_nvrtc_load). With lock, get is
 * mpl_kcache_get_locked's: on a miss the caller compiles, puts, then mpl_kcache_unlock's *lock. */
bool mpl_nvrtc_cache_get(const char *src, const char *file, const char *const *opts, int nopts, uint8_t **entry,
                         const char **log, const char **ptx, int *lock);
void mpl_nvrtc_cache_put(const char *src, const char *file, const char *const *opts, int nopts, const char *log,
                         const char *ptx);

#endif
#endif
