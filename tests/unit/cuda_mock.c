/*
 * cuda_mock.c — the CUDA runtime API, the driver entry points and the cuBLAS table that the
 * cuda device uses, on host memory, for test_cuda_mock (cuda_mock.h says what the test
 * sees). Linked instead of libcudart; cuBLAS is this file's reference product put into
 * mpl_cublas by mpl_cublas_load, in place of runtime/cublas_dl.c's dlopen of libcublas.
 *
 * Invariants:
 *  - each call finishes its work before it returns; streams, events, modules and cuBLAS
 *    handles are checked for being alive where they are used, and counted with the
 *    allocations (cuda_mock_live), so a test can see that a device frees what it made;
 *  - device memory is host memory from aligned_alloc, filled with 0xFF bytes (f32 NaN) so
 *    that a read of memory nobody wrote shows; a copy or memset whose device side is not
 *    inside one live allocation, or whose kind contradicts its pointers, fails with
 *    cudaErrorInvalidValue, as a product outside its operands fails;
 *  - a failing call sets the last error, which cudaGetLastError returns and clears;
 *  - the product is column-major C = alpha op(A) op(B) + beta C accumulated in double,
 *    with the inputs first rounded to TF32 (10 fraction bits) or bf16 where the compute
 *    type or the handle's math mode lets cuBLAS use those tensor cores; C is not read when
 *    beta is 0.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/exec.h"

#include "runtime/cuda_dev.h"

#include "cuda_mock.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Kernels run one at a time: ranks are threads, and the host copies keep a kernel's
 * __shared__ arrays and the warp exchanges in static storage (cuda_host.h), which two
 * kernels running at once would share. Held around a kernel's run and the launch counts;
 * the kernels take `lock` themselves (cuda_mock_dev), so it is a lock of its own. */
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local cudaError_t last_error;

static cudaError_t set_error(cudaError_t e) {
  last_error = e;
  return e;
}

/* ---- device memory -------------------------------------------------------------------- */

typedef struct Alloc {
  char *p;
  size_t n;
} Alloc;
static Alloc *allocs;
static int nallocs, cap_allocs, fail_skip = -1;
static int live_objects; /* streams, events, modules, cuBLAS handles */

void cuda_mock_fail_alloc(int skip) { fail_skip = skip; }

int cuda_mock_live(void) { return nallocs + live_objects; }

/* The allocation holding [p, p + n), or -1. */
static int alloc_of(const void *p, size_t n) {
  const char *c = p;
  pthread_mutex_lock(&lock);
  int found = -1;
  for (int i = 0; i < nallocs && found < 0; i++)
    if (c >= allocs[i].p && c < allocs[i].p + allocs[i].n && n <= (size_t)(allocs[i].p + allocs[i].n - c)) found = i;
  pthread_mutex_unlock(&lock);
  return found;
}

static bool is_dev(const void *p) { return p && alloc_of(p, 1) >= 0; }

const void *cuda_mock_dev(const void *p, size_t n) {
  ck_assert_msg(alloc_of(p, n ? n : 1) >= 0, "mock: a kernel got %p (%zu bytes), not device memory", p, n);
  return p;
}

static cudaError_t dev_alloc(void **p, size_t n) {
  if (fail_skip == 0) {
    fail_skip = -1;
    *p = NULL;
    return set_error(cudaErrorMemoryAllocation);
  }
  if (fail_skip > 0) fail_skip--;
  size_t bytes = (n + 255) / 256 * 256;
  char *m = aligned_alloc(256, bytes ? bytes : 256);
  if (!m) return set_error(cudaErrorMemoryAllocation);
  memset(m, 0xFF, bytes);
  pthread_mutex_lock(&lock);
  if (nallocs == cap_allocs) {
    cap_allocs = cap_allocs ? 2 * cap_allocs : 64;
    allocs = realloc(allocs, sizeof *allocs * (size_t)cap_allocs);
    ck_assert(allocs);
  }
  allocs[nallocs++] = (Alloc){m, n};
  pthread_mutex_unlock(&lock);
  *p = m;
  return cudaSuccess;
}

static cudaError_t dev_free(void *p) {
  if (!p) return cudaSuccess;
  pthread_mutex_lock(&lock);
  int i = 0;
  while (i < nallocs && allocs[i].p != p) i++;
  bool found = i < nallocs;
  if (found) allocs[i] = allocs[--nallocs];
  pthread_mutex_unlock(&lock);
  if (!found) return set_error(cudaErrorInvalidValue);
  free(p);
  return cudaSuccess;
}

/* ---- streams and events ------------------------------------------------------------------ */

typedef struct MockStream {
  bool live;
} MockStream;
enum { MAX_STREAMS = 16 };
static MockStream streams[MAX_STREAMS];

/* The legacy default stream (NULL) or a live one made by cudaStreamCreateWithFlags. */
static bool stream_ok(cudaStream_t s) {
  MockStream *m = (MockStream *)s;
  return !m || (m >= streams && m < streams + MAX_STREAMS && m->live);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
  for (int i = 0; i < MAX_STREAMS; i++)
    if (!streams[i].live) {
      streams[i].live = true;
      live_objects++;
      *s = (cudaStream_t)&streams[i];
      return cudaSuccess;
    }
  return set_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s || !stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  ((MockStream *)s)->live = false;
  live_objects--;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) { return stream_ok(s) ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle); }
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t *e) {
  if (!(*e = malloc(1))) return set_error(cudaErrorMemoryAllocation);
  live_objects++;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e) return set_error(cudaErrorInvalidResourceHandle);
  free(e);
  live_objects--;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  return e && stream_ok(s) ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t e) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = 0.001f;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
  return e && stream_ok(s) ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle);
}

/* ---- the device ------------------------------------------------------------------------ */

cudaError_t cudaGetDeviceCount(int *count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }

/* One SM (so max_blocks = 32 and long loops go grid-stride), compute capability 9.0. */
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int dev) {
  if (dev != 0) return set_error(cudaErrorInvalidDevice);
  *v = a == cudaDevAttrMultiProcessorCount ? 1 : a == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int dev) {
  static int the_pool;
  *pool = (cudaMemPool_t)&the_pool;
  return dev == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice);
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr a, void *v) { return cudaSuccess; }
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr a, void *v) {
  *(cuuint64_t *)v = 0;
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAccess(cudaMemPool_t pool, const struct cudaMemAccessDesc *d, size_t n) { return cudaSuccess; }
cudaError_t cudaDeviceCanAccessPeer(int *can, int dev, int peer) {
  *can = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned int flags) { return set_error(cudaErrorInvalidDevice); }
cudaError_t cudaDeviceGetPCIBusId(char *id, int len, int dev) {
  snprintf(id, (size_t)len, "0000:00:00.0");
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorMemoryAllocation: return "out of memory (mock)";
  case cudaErrorInvalidValue: return "invalid argument (mock)";
  case cudaErrorInvalidDevice: return "invalid device ordinal (mock)";
  case cudaErrorInvalidResourceHandle: return "invalid resource handle (mock)";
  default: return "unknown error (mock)";
  }
}

/* ---- memory: allocation, copies, memset ------------------------------------------------------ */

cudaError_t cudaMalloc(void **p, size_t n) { return dev_alloc(p, n); }
cudaError_t cudaFree(void *p) { return dev_free(p); } /* cudaFree(NULL): the context, made at once */
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
  return stream_ok(s) ? dev_alloc(p, n) : set_error(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
  return stream_ok(s) ? dev_free(p) : set_error(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p) {
  memset(a, 0, sizeof *a);
  a->type = is_dev(p) ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  a->devicePointer = a->type == cudaMemoryTypeDevice ? (void *)p : NULL;
  return cudaSuccess;
}

/* A copy's n bytes at dst and src agree with kind: each device side inside one allocation,
 * each host side outside all (cudaMemcpyDefault: either, by the pointer). */
static bool copy_ok(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
  bool ddev = is_dev(dst), sdev = is_dev(src);
  if ((ddev && alloc_of(dst, n) < 0) || (sdev && alloc_of(src, n) < 0)) return false;
  switch (kind) {
  case cudaMemcpyHostToHost: return !ddev && !sdev;
  case cudaMemcpyHostToDevice: return ddev && !sdev;
  case cudaMemcpyDeviceToHost: return !ddev && sdev;
  case cudaMemcpyDeviceToDevice: return ddev && sdev;
  default: return kind == cudaMemcpyDefault;
  }
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
  if (!copy_ok(dst, src, n, kind)) return set_error(cudaErrorInvalidValue);
  memmove(dst, src, n);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  return cudaMemcpy(dst, src, n, kind);
}

cudaError_t cudaMemcpyPeerAsync(void *dst, int ddev, const void *src, int sdev, size_t n, cudaStream_t s) {
  if (ddev != 0 || sdev != 0) return set_error(cudaErrorInvalidDevice);
  return cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t w, size_t h,
                              enum cudaMemcpyKind kind, cudaStream_t s) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  if (w > dpitch || w > spitch) return set_error(cudaErrorInvalidPitchValue);
  for (size_t r = 0; r < h; r++)
    if (!copy_ok((char *)dst + r * dpitch, (const char *)src + r * spitch, w, kind)) return set_error(cudaErrorInvalidValue);
  for (size_t r = 0; r < h; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, w);
  return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n) {
  if (alloc_of(p, n) < 0) return set_error(cudaErrorInvalidValue);
  memset(p, v, n);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
  return stream_ok(s) ? cudaMemset(p, v, n) : set_error(cudaErrorInvalidResourceHandle);
}

/* ---- the driver: modules of PTX, host kernels, launches -------------------------------------- */

typedef struct Registered {
  MockKernel k;
  char *ptx; /* NULL: any module */
} Registered;
static Registered *reg;
static int nreg;
typedef struct Launches {
  const char *name;
  long n;
} Launches;
static Launches *counts;
static int ncounts;

/* (called from main too, outside a test: no ck_assert) */
void cuda_mock_add_kernels(const MockKernel *k, int n, const char *ptx) {
  reg = realloc(reg, sizeof *reg * (size_t)(nreg + n));
  if (!reg) abort();
  for (int i = 0; i < n; i++) reg[nreg++] = (Registered){k[i], ptx ? strdup(ptx) : NULL};
}

long cuda_mock_launches(const char *name) {
  long n = 0;
  pthread_mutex_lock(&run_lock);
  for (int i = 0; i < ncounts; i++)
    if (!strcmp(counts[i].name, name)) n = counts[i].n;
  pthread_mutex_unlock(&run_lock);
  return n;
}

static void count_launch(const char *name) {
  for (int i = 0; i < ncounts; i++)
    if (!strcmp(counts[i].name, name)) {
      counts[i].n++;
      return;
    }
  counts = realloc(counts, sizeof *counts * (size_t)(ncounts + 1));
  ck_assert(counts);
  counts[ncounts++] = (Launches){name, 1};
}

typedef struct MockModule {
  char *ptx;
  void *globals[8]; /* device memory of the __constant__ ints read so far */
  int nglobals;
  struct MockFunc *funcs;
} MockModule;
typedef struct MockFunc {
  const MockKernel *k;
  MockModule *mod;
  struct MockFunc *next;
} MockFunc;

/* cuModuleLoadDataEx: PTX text only (".version" before the first entry), kept. A refusal
 * writes its reason into the CU_JIT_ERROR_LOG_BUFFER the caller passed. */
static CUresult mod_load(CUmodule *mod, const void *image, unsigned nopt, CUjit_option *opt, void **val) {
  const char *ptx = image;
  if (!strstr(ptx, ".version") || !strstr(ptx, ".entry")) {
    char *log = NULL;
    size_t logn = 0;
    for (unsigned i = 0; i < nopt; i++) {
      if (opt[i] == CU_JIT_ERROR_LOG_BUFFER) log = val[i];
      if (opt[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) logn = (size_t)(uintptr_t)val[i];
    }
    if (log && logn) snprintf(log, logn, "mock: not PTX");
    return CUDA_ERROR_INVALID_PTX;
  }
  MockModule *m = calloc(1, sizeof *m);
  ck_assert(m && (m->ptx = strdup(ptx)));
  live_objects++;
  *mod = (CUmodule)m;
  return CUDA_SUCCESS;
}

static bool has_entry(const char *ptx, const char *name) {
  char entry[300];
  snprintf(entry, sizeof entry, ".entry %s(", name);
  return strstr(ptx, entry) != NULL;
}

/* cuModuleGetFunction: the entry must be in the PTX; its host copy must be registered. */
static CUresult get_function(CUfunction *f, CUmodule mod, const char *name) {
  MockModule *m = (MockModule *)mod;
  if (!has_entry(m->ptx, name)) return CUDA_ERROR_NOT_FOUND;
  for (int i = 0; i < nreg; i++)
    if (!strcmp(reg[i].k.name, name) && (!reg[i].ptx || !strcmp(reg[i].ptx, m->ptx))) {
      MockFunc *fn = malloc(sizeof *fn);
      ck_assert(fn);
      *fn = (MockFunc){&reg[i].k, m, m->funcs};
      m->funcs = fn;
      *f = (CUfunction)fn;
      return CUDA_SUCCESS;
    }
  ck_abort_msg("mock: the PTX has %s, but no host copy of it is registered for that PTX", name);
  return CUDA_ERROR_NOT_FOUND;
}

/* cuModuleGetGlobal of a `.const .align 4 .u32 NAME = V;`: V in 4 bytes of device memory. */
static CUresult get_global(CUdeviceptr *p, size_t *bytes, CUmodule mod, const char *name) {
  MockModule *m = (MockModule *)mod;
  char decl[300];
  snprintf(decl, sizeof decl, ".const .align 4 .u32 %s = ", name);
  const char *at = strstr(m->ptx, decl);
  if (!at) return CUDA_ERROR_NOT_FOUND;
  ck_assert(m->nglobals < 8);
  void *g;
  if (dev_alloc(&g, sizeof(int)) != cudaSuccess) return CUDA_ERROR_OUT_OF_MEMORY;
  *(int *)g = atoi(at + strlen(decl));
  m->globals[m->nglobals++] = g;
  *p = (CUdeviceptr)(uintptr_t)g;
  if (bytes) *bytes = sizeof(int);
  return CUDA_SUCCESS;
}

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned shared, CUstream s, void **params, void **extra) {
  const MockFunc *fn = (const MockFunc *)f;
  const MockKernel *k = fn->k;
  ck_assert_msg(stream_ok((cudaStream_t)s) && s, "mock: %s launched on a stream that is not live", k->name);
  ck_assert_msg(gy == 1 && gz == 1 && by == 1 && bz == 1 && gx >= 1, "mock: %s: grid %ux%ux%u, block %ux%ux%u", k->name,
                gx, gy, gz, bx, by, bz);
  ck_assert_msg(k->threads ? bx == k->threads : bx % 32 == 0 && bx <= 1024,
                "mock: %s launched with %u threads a block; it assumes %u (0: whole warps)", k->name, bx, k->threads);
  ck_assert_msg(shared == 0 && !extra && params, "mock: %s: dynamic shared memory %u, extra %p", k->name, shared,
                (void *)extra);
  pthread_mutex_lock(&run_lock);
  count_launch(k->name);
  k->run(params, gx, bx);
  pthread_mutex_unlock(&run_lock);
  return CUDA_SUCCESS;
}

static CUresult mod_unload(CUmodule mod) {
  MockModule *m = (MockModule *)mod;
  for (MockFunc *fn = m->funcs, *next; fn; fn = next) next = fn->next, free(fn);
  for (int i = 0; i < m->nglobals; i++) dev_free(m->globals[i]);
  free(m->ptx);
  free(m);
  live_objects--;
  return CUDA_SUCCESS;
}

static CUresult error_string(CUresult r, const char **s) {
  *s = r == CUDA_ERROR_INVALID_PTX ? "a PTX JIT compilation failed (mock)"
     : r == CUDA_ERROR_NOT_FOUND   ? "named symbol not found (mock)"
                                   : "driver error (mock)";
  return CUDA_SUCCESS;
}

cudaError_t cudaGetDriverEntryPointByVersion(const char *sym, void **fp, unsigned int version, unsigned long long flags,
                                             enum cudaDriverEntryPointQueryResult *status) {
  static const struct {
    const char *name;
    void *fn;
  } table[] = {{"cuModuleLoadDataEx", (void *)mod_load}, {"cuModuleGetFunction", (void *)get_function},
               {"cuLaunchKernel", (void *)launch},       {"cuModuleUnload", (void *)mod_unload},
               {"cuGetErrorString", (void *)error_string}, {"cuModuleGetGlobal", (void *)get_global}};
  *fp = NULL;
  *status = cudaDriverEntryPointSymbolNotFound;
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (!strcmp(table[i].name, sym)) *fp = table[i].fn, *status = cudaDriverEntryPointSuccess;
  return cudaSuccess;
}

/* ---- cuBLAS ------------------------------------------------------------------------------------- */

typedef struct MockHandle {
  cudaStream_t stream;
  cublasMath_t math;
} MockHandle;
static MockGemm last_gemm;

MockGemm cuda_mock_last_gemm(void) { return last_gemm; }

static cublasStatus_t blas_create(cublasHandle_t *h) {
  MockHandle *m = calloc(1, sizeof *m);
  if (!m) return CUBLAS_STATUS_ALLOC_FAILED;
  live_objects++;
  *h = (cublasHandle_t)m;
  return CUBLAS_STATUS_SUCCESS;
}
static cublasStatus_t blas_destroy(cublasHandle_t h) {
  free(h);
  live_objects--;
  return CUBLAS_STATUS_SUCCESS;
}
static cublasStatus_t blas_set_stream(cublasHandle_t h, cudaStream_t s) {
  if (!stream_ok(s)) return CUBLAS_STATUS_INVALID_VALUE;
  ((MockHandle *)h)->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
static cublasStatus_t blas_set_math(cublasHandle_t h, cublasMath_t m) {
  ((MockHandle *)h)->math = m;
  return CUBLAS_STATUS_SUCCESS;
}
static const char *blas_status(cublasStatus_t s) {
  switch (s) {
  case CUBLAS_STATUS_SUCCESS: return "success (mock)";
  case CUBLAS_STATUS_INVALID_VALUE: return "invalid value (mock)";
  case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported (mock)";
  default: return "execution failed (mock)";
  }
}

/* x rounded to nearest-even with `bits` fraction bits (finite x). */
static float round_frac(float x, int bits) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t drop = 23 - bits, half = 1u << (drop - 1);
  u = (u + half - 1 + ((u >> drop) & 1)) & ~((1u << drop) - 1);
  memcpy(&x, &u, 4);
  return x;
}

/* Element i of an operand of type t, rounded to `bits` fraction bits (23: as it is). */
static float elem(const void *p, cudaDataType t, size_t i, int bits) {
  float x;
  if (t == CUDA_R_16BF) {
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    memcpy(&x, &u, 4);
  } else {
    x = ((const float *)p)[i];
  }
  return bits < 23 ? round_frac(x, bits) : x;
}

/* One column-major product; the operands' extents must lie in device memory. */
typedef struct Gemm {
  cublasOperation_t ta, tb;
  int m, n, k, lda, ldb, ldc;
  float alpha, beta;
  const void *A, *B;
  float *C;
  cudaDataType at, bt;
  int bits; /* the inputs' fraction bits: 23, 10 (TF32), 7 (bf16) */
} Gemm;

static bool extent_ok(const void *p, size_t es, int rows, int cols, int ld) {
  return rows == 0 || cols == 0 || alloc_of(p, es * ((size_t)ld * (size_t)(cols - 1) + (size_t)rows)) >= 0;
}

static cublasStatus_t gemm_one(const Gemm *g) {
  int ar = g->ta == CUBLAS_OP_N ? g->m : g->k, ac = g->ta == CUBLAS_OP_N ? g->k : g->m;
  int br = g->tb == CUBLAS_OP_N ? g->k : g->n, bc = g->tb == CUBLAS_OP_N ? g->n : g->k;
  size_t ae = g->at == CUDA_R_16BF ? 2 : 4, be = g->bt == CUDA_R_16BF ? 2 : 4;
  if (g->m < 0 || g->n < 0 || g->k < 0 || g->lda < (ar > 1 ? ar : 1) || g->ldb < (br > 1 ? br : 1) ||
      g->ldc < (g->m > 1 ? g->m : 1))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!extent_ok(g->A, ae, ar, ac, g->lda) || !extent_ok(g->B, be, br, bc, g->ldb) ||
      !extent_ok(g->C, 4, g->m, g->n, g->ldc))
    return CUBLAS_STATUS_EXECUTION_FAILED;
  /* the operands rounded once, as rows of k (a test's time went mostly to this loop's
     element reads); the sums keep their order, l = 0 .. k-1 in double */
  size_t K = (size_t)g->k;
  double *a = malloc(sizeof *a * ((size_t)g->m * K + 1)), *b = malloc(sizeof *b * ((size_t)g->n * K + 1));
  if (!a || !b) { free(a); free(b); return CUBLAS_STATUS_ALLOC_FAILED; }
  for (int i = 0; i < g->m; i++)
    for (int l = 0; l < g->k; l++)
      a[(size_t)i * K + (size_t)l] = elem(g->A, g->at, g->ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * g->lda
                                                                            : (size_t)l + (size_t)i * g->lda, g->bits);
  for (int j = 0; j < g->n; j++)
    for (int l = 0; l < g->k; l++)
      b[(size_t)j * K + (size_t)l] = elem(g->B, g->bt, g->tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * g->ldb
                                                                            : (size_t)j + (size_t)l * g->ldb, g->bits);
  for (int j = 0; j < g->n; j++)
    for (int i = 0; i < g->m; i++) {
      const double *arow = a + (size_t)i * K, *bcol = b + (size_t)j * K;
      double acc = 0;
      for (size_t l = 0; l < K; l++) acc += arow[l] * bcol[l];
      float *c = g->C + (size_t)i + (size_t)j * g->ldc;
      *c = (float)((double)g->alpha * acc + (g->beta != 0 ? (double)g->beta * *c : 0.0));
    }
  free(a);
  free(b);
  return CUBLAS_STATUS_SUCCESS;
}

/* The fraction bits a product's inputs keep: the compute type's, or (32F on f32 inputs)
 * the handle's TF32 math mode's; -1: a combination cublasGemmEx refuses. */
static int input_bits(const MockHandle *h, cudaDataType at, cudaDataType bt, cudaDataType ct, cublasComputeType_t cmp) {
  if (at != bt || ct != CUDA_R_32F) return -1;
  if (at == CUDA_R_16BF) return cmp == CUBLAS_COMPUTE_32F ? 23 : -1;
  if (at != CUDA_R_32F) return -1;
  switch (cmp) {
  case CUBLAS_COMPUTE_32F: return h->math == CUBLAS_TF32_TENSOR_OP_MATH ? 10 : 23;
  case CUBLAS_COMPUTE_32F_FAST_TF32: return 10;
  case CUBLAS_COMPUTE_32F_FAST_16BF: return 7;
  default: return -1;
  }
}

static cublasStatus_t gemm_batch(cublasHandle_t h, const char *fn, cublasComputeType_t cmp, Gemm g, long long sa,
                                 long long sb, long long sc, int batch) {
  const MockHandle *mh = (const MockHandle *)h;
  if (!stream_ok(mh->stream) || !mh->stream || batch < 1) return CUBLAS_STATUS_INVALID_VALUE;
  g.bits = input_bits(mh, g.at, g.bt, CUDA_R_32F, cmp);
  if (g.bits < 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  pthread_mutex_lock(&run_lock);
  last_gemm = (MockGemm){fn, (int)mh->math, (int)cmp, (int)g.at, batch};
  pthread_mutex_unlock(&run_lock);
  size_t ae = g.at == CUDA_R_16BF ? 2 : 4, be = g.bt == CUDA_R_16BF ? 2 : 4;
  const char *A = g.A, *B = g.B;
  float *C = g.C;
  for (int b = 0; b < batch; b++) {
    g.A = A + (size_t)(b * sa) * ae, g.B = B + (size_t)(b * sb) * be, g.C = C + b * sc;
    cublasStatus_t s = gemm_one(&g);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
  }
  return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t blas_sgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                 const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                                 float *C, int ldc) {
  Gemm g = {ta, tb, m, n, k, lda, ldb, ldc, *alpha, *beta, A, B, C, CUDA_R_32F, CUDA_R_32F, 23};
  return gemm_batch(h, "sgemm", CUBLAS_COMPUTE_32F, g, 0, 0, 0, 1);
}

static cublasStatus_t blas_sgemm_strided(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *A, int lda, long long sa,
                                         const float *B, int ldb, long long sb, const float *beta, float *C, int ldc,
                                         long long sc, int batch) {
  Gemm g = {ta, tb, m, n, k, lda, ldb, ldc, *alpha, *beta, A, B, C, CUDA_R_32F, CUDA_R_32F, 23};
  return gemm_batch(h, "sgemm_strided", CUBLAS_COMPUTE_32F, g, sa, sb, sc, batch);
}

static cublasStatus_t blas_gemm_ex(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *A, cudaDataType at, int lda, const void *B,
                                   cudaDataType bt, int ldb, const void *beta, void *C, cudaDataType ct, int ldc,
                                   cublasComputeType_t cmp, cublasGemmAlgo_t algo) {
  if (ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  Gemm g = {ta, tb, m, n, k, lda, ldb, ldc, *(const float *)alpha, *(const float *)beta, A, B, C, at, bt, 23};
  return gemm_batch(h, "gemm_ex", cmp, g, 0, 0, 0, 1);
}

static cublasStatus_t blas_gemm_strided_ex(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                           int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                           long long sa, const void *B, cudaDataType bt, int ldb, long long sb,
                                           const void *beta, void *C, cudaDataType ct, int ldc, long long sc,
                                           int batch, cublasComputeType_t cmp, cublasGemmAlgo_t algo) {
  if (ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  Gemm g = {ta, tb, m, n, k, lda, ldb, ldc, *(const float *)alpha, *(const float *)beta, A, B, C, at, bt, 23};
  return gemm_batch(h, "gemm_strided_ex", cmp, g, sa, sb, sc, batch);
}

static cublasStatus_t blas_saxpy(cublasHandle_t h, int n, const float *alpha, const float *x, int incx, float *y,
                                 int incy) {
  if (incx != 1 || incy != 1 || n < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (n && (alloc_of(x, 4 * (size_t)n) < 0 || alloc_of(y, 4 * (size_t)n) < 0)) return CUBLAS_STATUS_EXECUTION_FAILED;
  for (int i = 0; i < n; i++) y[i] = fmaf(*alpha, x[i], y[i]);
  return CUBLAS_STATUS_SUCCESS;
}

MplCublas mpl_cublas;

int mpl_cublas_load(MplErr *err) {
  mpl_cublas = (MplCublas){.create = blas_create,
                           .destroy = blas_destroy,
                           .set_stream = blas_set_stream,
                           .set_math_mode = blas_set_math,
                           .status_string = blas_status,
                           .sgemm = blas_sgemm,
                           .sgemm_strided = blas_sgemm_strided,
                           .gemm_ex = blas_gemm_ex,
                           .gemm_strided_ex = blas_gemm_strided_ex,
                           .saxpy = blas_saxpy};
  return MPL_OK;
}

const char *mpl_cublas_status(cublasStatus_t s) { return blas_status(s); }
