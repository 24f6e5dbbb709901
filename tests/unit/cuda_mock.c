/*
 * cuda_mock.c — the CUDA runtime API, the driver entry points and the cuBLAS table that the
 * cuda device uses, on host memory, for test_cuda_mock (cuda_mock.h says what the test
 * sees). Linked instead of libcudart; cuBLAS is this file's reference product put into
 * mpl_cublas by mpl_cublas_load, in place of runtime/cublas_dl.c's dlopen of libcublas.
 *
 * Invariants:
 *  - each call finishes its work before it returns (unless MPL_MOCK_DEFER: the deferred
 *    mode at the end of the file queues a stream's work until the host waits); streams,
 *    events, modules and cuBLAS
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
static _Atomic int live_objects; /* streams, events, modules, cuBLAS handles, graphs (ranks are threads) */

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

typedef struct MockGraph MockGraph;
typedef struct MockStream {
  bool live;
  MockGraph *capture; /* a capture in progress: its records (cudaStreamBeginCapture) */
  pthread_t owner;    /* the thread that began it */
  MockGraph *queue;   /* deferred mode: the work queued and not yet run (from head on) */
  int head;
  long done;          /* deferred mode: items run since the slot's first stream (never reset) */
} MockStream;
enum { MAX_STREAMS = 64 };
static MockStream streams[MAX_STREAMS];
/* Held while a capture begins or ends and while another thread looks at the captures (rank
 * threads capture on their own streams at once; a slot and a thread id are reused between
 * runs, so a stale owner must never be seen beside a new capture). */
static pthread_mutex_t capture_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic long eager_ops; /* device operations run at once (MockGraphStats.eager; ranks are threads) */

/* The capture in progress on s, or NULL. */
static MockGraph *capture_of(cudaStream_t s) { return s ? ((MockStream *)s)->capture : NULL; }
/* Fails the test when s is capturing (what) or, with s NULL, when a stream this thread began
 * a capture on is (other ranks' threads capture on their own streams meanwhile). */
static void no_capture(cudaStream_t s, const char *what) {
  pthread_mutex_lock(&capture_lock);
  bool open = s && capture_of(s);
  for (int i = 0; i < MAX_STREAMS && !s && !open; i++)
    open = streams[i].live && streams[i].capture && pthread_equal(streams[i].owner, pthread_self());
  pthread_mutex_unlock(&capture_lock);
  ck_assert_msg(!open, "mock: %s inside a stream capture", what);
}
/* Fails the test when any stream captures, whichever thread began it (what: a call that
 * synchronizes the whole device, invalid while one of its streams captures). */
static void no_capture_anywhere(const char *what) {
  pthread_mutex_lock(&capture_lock);
  bool open = false;
  for (int i = 0; i < MAX_STREAMS; i++) open = open || (streams[i].live && streams[i].capture);
  pthread_mutex_unlock(&capture_lock);
  ck_assert_msg(!open, "mock: %s while a stream captures", what);
}
/* The records a capture adds (the graph section below). */
static void rec_memset(MockGraph *g, void *p, int v, size_t n);
static void rec_copy(MockGraph *g, void *dst, const void *src, size_t n, size_t dpitch, size_t spitch, size_t h);
static void rec_staged(MockGraph *g, void *dst, void *stage, size_t n); /* a copy from the mock's own host bytes */
/* Deferred mode (the section at the end): on when MPL_MOCK_DEFER names a seed. */
static bool deferred(void);
static void drain(MockStream *s);
static void drain_all(void);
static void defer_record(MockStream *s, cudaEvent_t e);
static void defer_wait(MockStream *s, cudaEvent_t e);
static void defer_until_event(cudaEvent_t e);
static void defer_free(MockStream *s, void *p);
static MockGraph *queue_for(cudaStream_t s); /* s's queue when its work is deferred, else NULL */

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
  no_capture(s, "a stream's destruction");
  if (deferred()) drain((MockStream *)s); /* (its work still runs) */
  ((MockStream *)s)->live = false;
  live_objects--;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  no_capture(s, "a wait for the stream");
  if (deferred() && s) drain((MockStream *)s);
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }
cudaError_t cudaDeviceSynchronize(void) {
  no_capture_anywhere("cudaDeviceSynchronize");
  if (deferred()) drain_all();
  return cudaSuccess;
}

/* An event: where its last record stands in a stream's queue (deferred mode), else nothing. */
typedef struct MockEvent {
  MockStream *s; /* NULL: never recorded */
  long ticket;   /* the record is that stream's item number ticket (counted from 1) */
  double t;      /* the mock's clock when the record was reached (cudaEventElapsedTime) */
} MockEvent;

/* The mock's clock, in ns: a kernel advances it by 1 ns a thread, a product by 1 ns per 1,000
 * multiply-adds (so MPL_PROFILE's table has times that differ, the larger work the longer). */
static double mock_clock_ns; /* under run_lock */
static double clock_now(void) {
  pthread_mutex_lock(&run_lock);
  double t = mock_clock_ns;
  pthread_mutex_unlock(&run_lock);
  return t;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) {
  if (!(*e = calloc(1, sizeof(MockEvent)))) return set_error(cudaErrorMemoryAllocation);
  live_objects++;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e) return set_error(cudaErrorInvalidResourceHandle);
  if (deferred()) defer_until_event(e); /* (its queued record writes it) */
  free(e);
  live_objects--;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e || !stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  no_capture(s, "an event's record");
  if (deferred() && s) {
    defer_record((MockStream *)s, e);
  } else {
    ((MockEvent *)e)->s = NULL; /* complete now (the legacy stream: nothing is queued there) */
    ((MockEvent *)e)->t = clock_now();
  }
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return set_error(cudaErrorInvalidResourceHandle);
  if (deferred()) defer_until_event(e);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  if (!a || !b) return set_error(cudaErrorInvalidResourceHandle);
  if (deferred()) defer_until_event(a), defer_until_event(b);
  *ms = (float)((((MockEvent *)b)->t - ((MockEvent *)a)->t) * 1e-6);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
  if (!e || !stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  no_capture(s, "a wait for an event"); /* (an event from outside the capture: the device never does it) */
  if (deferred() && s) defer_wait((MockStream *)s, e);
  return cudaSuccess;
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

cudaError_t cudaMalloc(void **p, size_t n) {
  no_capture(NULL, "cudaMalloc");
  return dev_alloc(p, n);
}
cudaError_t cudaFree(void *p) { /* cudaFree(NULL): the context, made at once */
  if (p) no_capture_anywhere("cudaFree"); /* (it synchronizes the device) */
  if (p && deferred()) drain_all();
  return dev_free(p);
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  no_capture(NULL, "cudaMallocAsync");
  return dev_alloc(p, n);
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  no_capture(NULL, "cudaFreeAsync");
  if (deferred() && s && p) {
    if (alloc_of(p, 1) < 0) return set_error(cudaErrorInvalidValue);
    defer_free((MockStream *)s, p); /* in stream order: the work queued before it still reads it */
    return cudaSuccess;
  }
  return dev_free(p);
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
  MockGraph *g = capture_of(s), *q = queue_for(s);
  if (q) {
    if (!copy_ok(dst, src, n, kind)) return set_error(cudaErrorInvalidValue);
    if (is_dev(dst) && is_dev(src)) {
      eager_ops++;
      rec_copy(q, dst, src, n, n, n, 1);
      return cudaSuccess;
    }
    drain((MockStream *)s); /* host memory (pageable): the copy waits for the stream */
    if (is_dev(dst) && n) { /* to the device: the host's bytes staged now, the device written in stream order
                               (another stream reading dst without a wait may see the old bytes) */
      void *stage = malloc(n);
      ck_assert(stage);
      memcpy(stage, src, n);
      rec_staged(q, dst, stage, n);
      return cudaSuccess;
    }
  }
  if (!g) {
    eager_ops += is_dev(dst) && is_dev(src);
    return cudaMemcpy(dst, src, n, kind);
  }
  ck_assert_msg(is_dev(dst) && is_dev(src), "mock: a copy touching host memory inside a stream capture");
  if (!copy_ok(dst, src, n, kind)) return set_error(cudaErrorInvalidValue);
  rec_copy(g, dst, src, n, n, n, 1);
  return cudaSuccess;
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
  MockGraph *g = capture_of(s), *q = queue_for(s);
  if (g) {
    ck_assert_msg(is_dev(dst) && is_dev(src), "mock: a copy touching host memory inside a stream capture");
    rec_copy(g, dst, src, w, dpitch, spitch, h);
    return cudaSuccess;
  }
  eager_ops += is_dev(dst) && is_dev(src);
  if (q && is_dev(dst) && is_dev(src)) {
    rec_copy(q, dst, src, w, dpitch, spitch, h);
    return cudaSuccess;
  }
  if (q) drain((MockStream *)s);
  for (size_t r = 0; r < h; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, w);
  return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n) {
  if (alloc_of(p, n) < 0) return set_error(cudaErrorInvalidValue);
  memset(p, v, n);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  MockGraph *g = capture_of(s), *q = queue_for(s);
  if (q) {
    if (alloc_of(p, n) < 0) return set_error(cudaErrorInvalidValue);
    eager_ops++;
    rec_memset(q, p, v, n);
    return cudaSuccess;
  }
  if (!g) {
    eager_ops++;
    return cudaMemset(p, v, n);
  }
  if (alloc_of(p, n) < 0) return set_error(cudaErrorInvalidValue);
  rec_memset(g, p, v, n);
  return cudaSuccess;
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
enum { MAX_PARAMS = 64 };
typedef struct MockFunc {
  const MockKernel *k;
  MockModule *mod;
  struct MockFunc *next;
  int np;                         /* parameters (-1: their sizes are not known) */
  unsigned short psize[MAX_PARAMS];
} MockFunc;

/* The sizes of NAME's parameters from PTX's `.entry NAME(` list: `.param .u64 ...` (the
 * type's bits), `.param .align 8 .b8 NAME_param_0[2312]` (a struct by value). -1: no list
 * (a stand-in module's bare entry). */
static int ptx_params(const char *ptx, const char *name, unsigned short *psize) {
  char entry[300];
  snprintf(entry, sizeof entry, ".entry %s(", name);
  const char *at = strstr(ptx, entry), *end = at ? strchr(at, ')') : NULL;
  if (!end) return -1;
  int n = 0;
  for (const char *p = strstr(at, ".param"); p && p < end; p = strstr(p + 6, ".param")) {
    const char *stop = p + 6;
    while (stop < end && *stop != ',' && *stop != '\n') stop++;
    const char *br = memchr(p, '[', (size_t)(stop - p));
    unsigned size = 0;
    if (br) {
      size = (unsigned)atoi(br + 1);
    } else {
      for (const char *t = p + 6; t < stop && !size; t++) /* the first .u32, .f64, .b16, ... */
        if (t[0] == '.' && strchr("usbf", t[1]) && t[2] >= '0' && t[2] <= '9') size = (unsigned)atoi(t + 2) / 8;
    }
    ck_assert_msg(size > 0 && n < MAX_PARAMS, "mock: %s: cannot read a parameter's size in '%.*s'", name,
                  (int)(stop - p), p);
    psize[n++] = (unsigned short)size;
  }
  return n;
}

/* cuModuleLoadDataEx: PTX text only (".version" before the first entry), kept. A refusal
 * writes its reason into the CU_JIT_ERROR_LOG_BUFFER the caller passed. */
static CUresult mod_load(CUmodule *mod, const void *image, unsigned nopt, CUjit_option *opt, void **val) {
  const char *ptx = image;
  no_capture(NULL, "a module's load");
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
      *fn = (MockFunc){&reg[i].k, m, m->funcs, -1, {0}};
      if (reg[i].k.psize) {
        for (fn->np = 0; reg[i].k.psize[fn->np]; fn->np++) {
          ck_assert(fn->np < MAX_PARAMS);
          fn->psize[fn->np] = reg[i].k.psize[fn->np];
        }
      } else {
        fn->np = ptx_params(m->ptx, name, fn->psize);
      }
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

static void rec_kernel(MockGraph *g, const MockFunc *fn, unsigned grid, unsigned threads, void **params);

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
  MockGraph *g = capture_of((cudaStream_t)s), *q = queue_for((cudaStream_t)s);
  if (g) {
    rec_kernel(g, fn, gx, bx, params);
    return CUDA_SUCCESS;
  }
  if (q) {
    eager_ops++;
    rec_kernel(q, fn, gx, bx, params);
    return CUDA_SUCCESS;
  }
  pthread_mutex_lock(&run_lock);
  eager_ops++;
  count_launch(k->name);
  k->run(params, gx, bx);
  mock_clock_ns += (double)gx * bx;
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
  void *workspace; /* cublasSetWorkspace's (device memory), or NULL */
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

/* A product's record in a capture (the graph section below). */
typedef struct GemmCall {
  const char *fn;
  MockHandle h;
  cublasComputeType_t cmp;
  Gemm g;
  long long sa, sb, sc;
  int batch;
} GemmCall;
static void rec_gemm(MockGraph *graph, const GemmCall *c);
static cublasStatus_t gemm_run(const GemmCall *c);

static cublasStatus_t gemm_batch(cublasHandle_t h, const char *fn, cublasComputeType_t cmp, Gemm g, long long sa,
                                 long long sb, long long sc, int batch) {
  const MockHandle *mh = (const MockHandle *)h;
  if (!stream_ok(mh->stream) || !mh->stream || batch < 1) return CUBLAS_STATUS_INVALID_VALUE;
  g.bits = input_bits(mh, g.at, g.bt, CUDA_R_32F, cmp);
  if (g.bits < 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  GemmCall c = {fn, *mh, cmp, g, sa, sb, sc, batch};
  MockGraph *graph = capture_of(mh->stream), *q = queue_for(mh->stream);
  if (graph) { /* alpha and beta were read now, as cuBLAS reads host scalars at the capture */
    rec_gemm(graph, &c);
    return CUBLAS_STATUS_SUCCESS;
  }
  eager_ops++;
  if (q) { /* (the operands' extents are checked when it runs, as after a capture) */
    rec_gemm(q, &c);
    return CUBLAS_STATUS_SUCCESS;
  }
  return gemm_run(&c);
}

static cublasStatus_t gemm_run(const GemmCall *c) {
  const MockHandle *mh = &c->h;
  Gemm g = c->g;
  const char *fn = c->fn;
  cublasComputeType_t cmp = c->cmp;
  long long sa = c->sa, sb = c->sb, sc = c->sc;
  int batch = c->batch;
  pthread_mutex_lock(&run_lock);
  last_gemm = (MockGemm){fn, (int)mh->math, (int)cmp, (int)g.at, batch};
  mock_clock_ns += (double)g.m * g.n * g.k * batch / 1000;
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

static void rec_saxpy(MockGraph *graph, int n, float alpha, const float *x, float *y);
static void saxpy_run(int n, float alpha, const float *x, float *y) {
  for (int i = 0; i < n; i++) y[i] = fmaf(alpha, x[i], y[i]);
}

static cublasStatus_t blas_saxpy(cublasHandle_t h, int n, const float *alpha, const float *x, int incx, float *y,
                                 int incy) {
  if (incx != 1 || incy != 1 || n < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (n && (alloc_of(x, 4 * (size_t)n) < 0 || alloc_of(y, 4 * (size_t)n) < 0)) return CUBLAS_STATUS_EXECUTION_FAILED;
  cudaStream_t st = ((MockHandle *)h)->stream;
  MockGraph *graph = capture_of(st), *q = queue_for(st);
  if (graph) rec_saxpy(graph, n, *alpha, x, y);
  else if (q) {
    rec_saxpy(q, n, *alpha, x, y);
    eager_ops++;
  } else {
    saxpy_run(n, *alpha, x, y);
    eager_ops++;
  }
  return CUBLAS_STATUS_SUCCESS;
}

/* cublasSetWorkspace: device memory of at least `bytes`, kept for the handle's products. */
static cublasStatus_t blas_set_workspace(cublasHandle_t h, void *ws, size_t bytes) {
  if (bytes && alloc_of(ws, bytes) < 0) return CUBLAS_STATUS_INVALID_VALUE;
  ((MockHandle *)h)->workspace = ws;
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
                           .saxpy = blas_saxpy,
                           .set_workspace = blas_set_workspace};
  return MPL_OK;
}

const char *mpl_cublas_status(cublasStatus_t s) { return blas_status(s); }

/* ---- stream capture and graphs ------------------------------------------------------------------ */

typedef enum { W_KERNEL, W_MEMSET, W_COPY, W_GEMM, W_SAXPY, W_WAIT, W_FREE, W_GRAPH, W_RECORD } WorkKind;
typedef struct Work {
  WorkKind kind;
  const MockFunc *fn; /* kernel: the function, its grid, and its parameters copied into blob */
  unsigned grid, threads;
  char *blob;
  size_t blob_n;
  void *dst; /* memset (v), copies (rows of n bytes, h of them, at the pitches) and saxpy (n floats) */
  const void *src;
  size_t n, dpitch, spitch, h;
  int v;
  float alpha;
  GemmCall gemm;
  bool staged;     /* deferred mode: a copy from host bytes staged at the call (src is the mock's: freed after) */
  MockStream *ws; /* deferred mode: a wait (until ws has run wticket items), a graph's launch */
  long wticket;
  MockGraph *snap, *exec;
} Work;
struct MockGraph {
  Work *w;
  int n, cap;
  int pending; /* deferred mode: launches of this executable graph queued and not yet run */
  bool queue;  /* deferred mode: a stream's queue (adding to it may run some queued work early) */
};
static MockGraphStats graph_stats; /* under stats_lock (ranks are threads) */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
#define STAT(expr) (pthread_mutex_lock(&stats_lock), (expr), pthread_mutex_unlock(&stats_lock))
static int refuse_skip = -1;

MockGraphStats cuda_mock_graph_stats(void) {
  pthread_mutex_lock(&stats_lock);
  MockGraphStats s = graph_stats;
  pthread_mutex_unlock(&stats_lock);
  s.eager = eager_ops;
  return s;
}
void cuda_mock_refuse_update(int skip) { refuse_skip = skip; }

static pthread_mutex_t defer_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static void run_early(void);

static void add_work(MockGraph *g, const Work *w) {
  pthread_mutex_lock(&defer_lock); /* (a deferred queue: another rank's thread may be running it) */
  if (g->n == g->cap) {
    g->cap = g->cap ? 2 * g->cap : 64;
    g->w = realloc(g->w, sizeof *g->w * (size_t)g->cap);
    ck_assert(g->w);
  }
  g->w[g->n++] = *w;
  if (g->queue) run_early();
  pthread_mutex_unlock(&defer_lock);
}

static void rec_memset(MockGraph *g, void *p, int v, size_t n) { add_work(g, &(Work){.kind = W_MEMSET, .dst = p, .v = v, .n = n}); }
static void rec_copy(MockGraph *g, void *dst, const void *src, size_t n, size_t dpitch, size_t spitch, size_t h) {
  add_work(g, &(Work){.kind = W_COPY, .dst = dst, .src = src, .n = n, .dpitch = dpitch, .spitch = spitch, .h = h});
}
static void rec_staged(MockGraph *g, void *dst, void *stage, size_t n) {
  add_work(g, &(Work){.kind = W_COPY, .dst = dst, .src = stage, .n = n, .dpitch = n, .spitch = n, .h = 1, .staged = true});
}
static void rec_gemm(MockGraph *graph, const GemmCall *c) { add_work(graph, &(Work){.kind = W_GEMM, .gemm = *c}); }
static void rec_saxpy(MockGraph *graph, int n, float alpha, const float *x, float *y) {
  add_work(graph, &(Work){.kind = W_SAXPY, .n = (size_t)n, .alpha = alpha, .src = x, .dst = y});
}
/* The parameters' values copied now (the caller's variables may be gone at the launch), each
 * at an offset aligned to 8. */
static void rec_kernel(MockGraph *g, const MockFunc *fn, unsigned grid, unsigned threads, void **params) {
  ck_assert_msg(fn->np >= 0, "mock: %s captured, but the sizes of its parameters are not known", fn->k->name);
  size_t total = 0;
  for (int i = 0; i < fn->np; i++) total += (fn->psize[i] + 7u) / 8 * 8;
  Work w = {.kind = W_KERNEL, .fn = fn, .grid = grid, .threads = threads, .blob_n = total};
  ck_assert(w.blob = malloc(total ? total : 1));
  for (int i = 0, at = 0; i < fn->np; at += (fn->psize[i] + 7) / 8 * 8, i++) memcpy(w.blob + at, params[i], fn->psize[i]);
  add_work(g, &w);
}

static Work work_copy(const Work *w) {
  Work c = *w;
  if (w->kind == W_KERNEL) {
    ck_assert(c.blob = malloc(w->blob_n ? w->blob_n : 1));
    memcpy(c.blob, w->blob, w->blob_n);
  }
  return c;
}

static void graph_clear(MockGraph *g) {
  for (int i = 0; i < g->n; i++) free(g->w[i].blob);
  free(g->w);
  *g = (MockGraph){0};
}

static void run_work(const Work *w) {
  switch (w->kind) {
  case W_KERNEL: {
    void *params[MAX_PARAMS];
    for (int i = 0, at = 0; i < w->fn->np; at += (w->fn->psize[i] + 7) / 8 * 8, i++) params[i] = w->blob + at;
    pthread_mutex_lock(&run_lock);
    count_launch(w->fn->k->name);
    w->fn->k->run(params, w->grid, w->threads);
    mock_clock_ns += (double)w->grid * w->threads;
    pthread_mutex_unlock(&run_lock);
    break;
  }
  case W_MEMSET:
    ck_assert_msg(alloc_of(w->dst, w->n) >= 0, "mock: a queued memset of %p (%zu bytes) runs on freed memory", w->dst, w->n);
    memset(w->dst, w->v, w->n);
    break;
  case W_COPY:
    for (size_t r = 0; r < w->h; r++) { /* (checked again as it runs: not freed since it was queued) */
      char *d = (char *)w->dst + r * w->dpitch;
      const char *src = (const char *)w->src + r * w->spitch;
      ck_assert_msg(alloc_of(d, w->n) >= 0 && (w->staged || alloc_of(src, w->n) >= 0),
                    "mock: a queued copy %p -> %p (%zu bytes) runs on freed memory", (const void *)src, (void *)d, w->n);
      memmove(d, src, w->n);
    }
    if (w->staged) free((void *)w->src);
    break;
  case W_GEMM: ck_assert_msg(gemm_run(&w->gemm) == CUBLAS_STATUS_SUCCESS, "mock: a captured or queued %s failed", w->gemm.fn); break;
  case W_SAXPY:
    ck_assert_msg(alloc_of(w->src, 4 * w->n) >= 0 && alloc_of(w->dst, 4 * w->n) >= 0, "mock: a queued saxpy runs on freed memory");
    saxpy_run((int)w->n, w->alpha, w->src, w->dst);
    break;
  case W_WAIT: case W_FREE: case W_GRAPH: case W_RECORD: ck_abort_msg("mock: a deferred record in a graph"); break;
  }
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
  if (!s || !stream_ok(s) || capture_of(s)) return set_error(cudaErrorInvalidValue);
  MockGraph *g = calloc(1, sizeof(MockGraph));
  ck_assert(g);
  pthread_mutex_lock(&capture_lock);
  ((MockStream *)s)->owner = pthread_self();
  ((MockStream *)s)->capture = g;
  pthread_mutex_unlock(&capture_lock);
  STAT(graph_stats.captures++);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *st) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  *st = capture_of(s) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
  *graph = NULL;
  if (!s || !stream_ok(s) || !capture_of(s)) return set_error(cudaErrorIllegalState);
  *graph = (cudaGraph_t)capture_of(s);
  pthread_mutex_lock(&capture_lock);
  ((MockStream *)s)->capture = NULL;
  pthread_mutex_unlock(&capture_lock);
  live_objects++;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
  const MockGraph *g = (const MockGraph *)graph;
  MockGraph *e = calloc(1, sizeof *e);
  ck_assert(e && g);
  for (int i = 0; i < g->n; i++) add_work(e, &(Work){0}), e->w[i] = work_copy(&g->w[i]);
  live_objects++;
  STAT(graph_stats.instantiated++);
  *exec = (cudaGraphExec_t)e;
  return cudaSuccess;
}

/* The records pair up: the same kind, kernel and grid, sizes and product. */
static bool same_shape(const Work *a, const Work *b) {
  if (a->kind != b->kind) return false;
  switch (a->kind) {
  case W_KERNEL: return a->fn == b->fn && a->grid == b->grid && a->threads == b->threads;
  case W_MEMSET: case W_SAXPY: return a->n == b->n;
  case W_COPY: return a->n == b->n && a->h == b->h;
  case W_GEMM: {
    const Gemm *x = &a->gemm.g, *y = &b->gemm.g;
    return a->gemm.fn == b->gemm.fn && a->gemm.cmp == b->gemm.cmp && a->gemm.batch == b->gemm.batch &&
           x->m == y->m && x->n == y->n && x->k == y->k && x->ta == y->ta && x->tb == y->tb && x->at == y->at;
  }
  case W_WAIT: case W_FREE: case W_GRAPH: case W_RECORD: return false; /* (never captured) */
  }
  return false;
}

cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t graph, cudaGraphExecUpdateResultInfo *info) {
  MockGraph *e = (MockGraph *)exec;
  const MockGraph *g = (const MockGraph *)graph;
  memset(info, 0, sizeof *info);
  pthread_mutex_lock(&defer_lock);
  int pending = e->pending;
  pthread_mutex_unlock(&defer_lock);
  /* (CUDA allows it: a queued launch keeps the parameters it had, as the snapshot here does; this
     checks device_cuda_graph.c's own stricter rule) */
  ck_assert_msg(!pending, "mock: cudaGraphExecUpdate of a graph whose launch has not run yet (MPL's rule, stricter "
                          "than CUDA's: an executable graph launched since the host last waited is never updated)");
  bool same = e->n == g->n;
  for (int i = 0; i < g->n && same; i++) same = same_shape(&e->w[i], &g->w[i]);
  pthread_mutex_lock(&stats_lock); /* (ranks are threads) */
  if (refuse_skip == 0) same = false;
  if (refuse_skip >= 0) refuse_skip--;
  pthread_mutex_unlock(&stats_lock);
  if (!same) {
    info->result = e->n != g->n ? cudaGraphExecUpdateErrorTopologyChanged : cudaGraphExecUpdateErrorParametersChanged;
    STAT(graph_stats.refused++);
    return set_error(cudaErrorGraphExecUpdateFailure);
  }
  for (int i = 0; i < g->n; i++) {
    free(e->w[i].blob);
    e->w[i] = work_copy(&g->w[i]);
  }
  info->result = cudaGraphExecUpdateSuccess;
  STAT(graph_stats.updated++);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!stream_ok(s)) return set_error(cudaErrorInvalidResourceHandle);
  no_capture(s, "a graph's launch");
  MockGraph *e = (MockGraph *)exec;
  MockGraph *q = queue_for(s);
  if (q) { /* a copy of its records now: an update after this launch changes the next one */
    MockGraph *snap = calloc(1, sizeof *snap);
    ck_assert(snap);
    for (int i = 0; i < e->n; i++) add_work(snap, &(Work){0}), snap->w[i] = work_copy(&e->w[i]);
    pthread_mutex_lock(&defer_lock);
    e->pending++;
    add_work(q, &(Work){.kind = W_GRAPH, .snap = snap, .exec = e});
    pthread_mutex_unlock(&defer_lock);
  } else {
    for (int i = 0; i < e->n; i++) run_work(&e->w[i]);
  }
  STAT(graph_stats.launches++);
  STAT(graph_stats.nodes += e->n);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  if (!graph) return set_error(cudaErrorInvalidValue);
  if (deferred()) { /* (its queued launches run on copies; a destroyed exec must not be waited for) */
    pthread_mutex_lock(&defer_lock);
    int pending = ((MockGraph *)graph)->pending;
    pthread_mutex_unlock(&defer_lock);
    if (pending) drain_all();
  }
  graph_clear((MockGraph *)graph);
  free(graph);
  live_objects--;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { return cudaGraphDestroy((cudaGraph_t)exec); }

/* ---- deferred mode ------------------------------------------------------------------------------
 * MPL_MOCK_DEFER=SEED (not 0): a stream's work (kernels, copies and memsets between device
 * buffers, products, graph launches, frees in stream order, waits for events) is queued, not
 * run, and runs when the host waits for it: cudaStreamSynchronize or Query (that stream's),
 * cudaEventSynchronize or Query (up to the event's record), cudaDeviceSynchronize and
 * cudaFree (all), a copy to or from host memory on the stream (pageable memory: after the
 * stream's work; to the device, the host's bytes are staged at the call and the device
 * written in stream order). A wait for an event runs, when its turn comes, the recording
 * stream up to the record. And after each queued item, now and then (a seeded draw), one
 * item of a random stream runs early, as a GPU runs streams side by side. So a missing wait
 * between streams, or a host read of device memory before its wait, gives other numbers than
 * the eager mock's (every call done before it returns), where a GPU would race; a queued copy,
 * memset or product (and any kernel, by its own checks) that runs on memory freed meanwhile
 * fails the test. cudaMemcpy and cudaMemset (the legacy stream) do not wait for the device's
 * streams, as for streams made with cudaStreamNonBlocking (the only kind the runtime makes;
 * the flags are not looked at). Every queue is under defer_lock (ranks are threads; a thread
 * may run another's stream). Not modelled: a graph's nodes interleaved with other streams'
 * work; cudaMallocAsync memory is usable at once everywhere. With several ranks the draws
 * follow the threads' timing, so a seed does not replay a run: a race that shows only on
 * some orders may pass one run and fail the next. */

static pthread_once_t defer_once = PTHREAD_ONCE_INIT;
static bool defer_on;
static uint64_t defer_rng;
static void defer_init(void) {
  const char *e = getenv("MPL_MOCK_DEFER");
  defer_on = e && *e && strcmp(e, "0");
  defer_rng = (defer_on ? strtoull(e, NULL, 10) : 0) * 0x9E3779B97F4A7C15ull | 1;
}
static bool deferred(void) {
  pthread_once(&defer_once, defer_init);
  return defer_on;
}
static unsigned defer_draw(unsigned n) { /* under defer_lock */
  defer_rng ^= defer_rng << 13, defer_rng ^= defer_rng >> 7, defer_rng ^= defer_rng << 17;
  return (unsigned)(defer_rng >> 33) % n;
}

static MockGraph *queue_for(cudaStream_t s) {
  if (!s || !deferred() || capture_of(s)) return NULL;
  MockStream *m = (MockStream *)s;
  pthread_mutex_lock(&defer_lock);
  if (!m->queue) {
    ck_assert(m->queue = calloc(1, sizeof(MockGraph)));
    m->queue->queue = true;
  }
  MockGraph *q = m->queue;
  pthread_mutex_unlock(&defer_lock);
  return q;
}
static long pending_of(const MockStream *m) { return m->queue ? m->queue->n - m->head : 0; }

static void run_until(MockStream *m, long ticket);
/* Runs m's next item (under defer_lock). */
static void run_next(MockStream *m) {
  MockGraph *q = m->queue;
  Work w = q->w[m->head++];
  if (m->head == q->n) q->n = m->head = 0;
  switch (w.kind) {
  case W_WAIT: run_until(w.ws, w.wticket); break;
  case W_FREE: ck_assert_msg(dev_free(w.dst) == cudaSuccess, "mock: a queued cudaFreeAsync of %p failed", w.dst); break;
  case W_RECORD: ((MockEvent *)w.dst)->t = clock_now(); break;
  case W_GRAPH:
    for (int i = 0; i < w.snap->n; i++) run_work(&w.snap->w[i]);
    graph_clear(w.snap), free(w.snap);
    w.exec->pending--;
    break;
  default: run_work(&w); free(w.blob); break;
  }
  m->done++;
}
static void run_until(MockStream *m, long ticket) {
  pthread_mutex_lock(&defer_lock);
  while (m->done < ticket && pending_of(m) > 0) run_next(m);
  pthread_mutex_unlock(&defer_lock);
}
static void drain(MockStream *m) {
  pthread_mutex_lock(&defer_lock);
  run_until(m, m->done + pending_of(m));
  pthread_mutex_unlock(&defer_lock);
}
static void drain_all(void) {
  pthread_mutex_lock(&defer_lock);
  for (bool more = true; more;) {
    more = false;
    for (int i = 0; i < MAX_STREAMS; i++)
      if (pending_of(&streams[i]) > 0) drain(&streams[i]), more = true;
  }
  pthread_mutex_unlock(&defer_lock);
}
/* After an item was queued (add_work): now and then one item of a random stream runs. */
static void run_early(void) {
  pthread_mutex_lock(&defer_lock);
  if (defer_draw(4) == 0) {
    int live[MAX_STREAMS], n = 0;
    for (int i = 0; i < MAX_STREAMS; i++)
      if (pending_of(&streams[i]) > 0) live[n++] = i;
    if (n) run_next(&streams[live[defer_draw((unsigned)n)]]);
  }
  pthread_mutex_unlock(&defer_lock);
}
static void defer_record(MockStream *m, cudaEvent_t e) {
  MockEvent *ev = (MockEvent *)e;
  pthread_mutex_lock(&defer_lock);
  add_work(queue_for((cudaStream_t)m), &(Work){.kind = W_RECORD, .dst = ev}); /* (it reads the clock when reached) */
  ev->s = m, ev->ticket = m->done + pending_of(m);
  pthread_mutex_unlock(&defer_lock);
}
static void defer_wait(MockStream *m, cudaEvent_t e) {
  const MockEvent *ev = (const MockEvent *)e;
  pthread_mutex_lock(&defer_lock);
  MockStream *at = ev->s;
  long ticket = ev->ticket;
  pthread_mutex_unlock(&defer_lock);
  if (!at || at == m) return; /* never recorded, or in this stream's own order */
  add_work(queue_for((cudaStream_t)m), &(Work){.kind = W_WAIT, .ws = at, .wticket = ticket});
}
static void defer_until_event(cudaEvent_t e) {
  const MockEvent *ev = (const MockEvent *)e;
  pthread_mutex_lock(&defer_lock);
  if (ev->s) run_until(ev->s, ev->ticket);
  pthread_mutex_unlock(&defer_lock);
}
/* A stream-ordered free runs as early as its stream's order and waits let it (its stream
 * run up to it at once, the work it waits for first): the order most likely to free a buffer
 * another stream still reads, where a wait before the free is missing. */
static void defer_free(MockStream *m, void *p) {
  add_work(queue_for((cudaStream_t)m), &(Work){.kind = W_FREE, .dst = p});
  drain(m);
}
