/*
 * device_cuda.c — the `cuda` device backend behind MplDeviceOps: one cudaMalloc arena
 * per rank carved at the planned offsets (by the executor), a compute stream and a
 * communication stream per rank, the job's generated kernels loaded from PTX with the
 * driver API and launched with cuLaunchKernel, matrix products with cuBLAS.
 *
 * Invariants:
 *  - everything a rank queues (kernels, products, accumulations, zeroing, copies from
 *    the host) goes on its compute stream, in program order; copy_to_host and sync wait
 *    for it, so the host never reads a buffer the device still writes;
 *  - every call is checked (CUDA_CHECK, CUBLAS_CHECK, CU_CHECK, NVRTC_CHECK) and the last
 *    error is checked after every launch; a failure is an MPL_ERR with a message, never
 *    an exit;
 *  - libcuda is never linked: the driver API functions come from the runtime
 *    (cudaGetDriverEntryPointByVersion) once a device exists, so a machine without the
 *    driver gets a message ("no CUDA driver") instead of a loader error;
 *  - matrix products are row-major C[M,N] = alpha op(A) op(B) + beta C, computed by
 *    cuBLAS (column-major) as C^T = op(B)^T op(A)^T, in the step's precision (JobStep.prec:
 *    FP32, TF32 tensor cores, or bf16 tensor cores with f32 accumulation on operands that
 *    hold bf16 values); mplrun --tf32 lets an f32 step use TF32 too;
 *  - the PTX in the job is preferred; when the driver refuses it (or the job has none),
 *    the job's CUDA source is compiled here with NVRTC for this device's architecture,
 *    with the options mplc uses (--fmad=false, IEEE division and square root);
 *  - each entry point first makes the rank's device current: ops may be called from the
 *    rank's thread or, between steps, from the main thread;
 *  - nothing here waits for another rank: arenas come from the stream-ordered pool (no
 *    device-wide cudaFree), the pool never makes a stream wait for another's free, and
 *    with a communicator's stop flag (NCCL in use) the host's waits are abortable
 *    (mpl_cuda_wait);
 *  - launch shape: the generated kernels and the optimizer's elementwise kernels loop
 *    grid-stride, so the shape never changes a value; a generated kernel gets BLOCK (256)
 *    threads a block when it has enough outer iterations to give every SM a block, else
 *    fewer (down to one warp) so that row kernels spread over the SMs; at most
 *    BLOCKS_PER_SM blocks per SM;
 *  - the optimizer runs here (copy_device .. adamw): the kernels of runtime/cuda/optim.cu
 *    (mpl_cuda_optim_src), compiled once per device at init with NVRTC (--fmad=false,
 *    IEEE division and square root), do optim.c's per-element arithmetic operation by
 *    operation, so the update of a param matches the CPU's bits for the same gradient; a
 *    sum of squares is a fixed tree in float64 whose shape depends on n only (not on the GPU).
 */
#include "exec.h"

#include <sched.h>
#include <string.h>
#include <time.h>

/* The optimizer kernels: runtime/cuda/optim.cu, embedded at build time (tools/embed.sh), compiled
 * with NVRTC by every cuda device at init (mpl_cuda_optim_compile). Per element they are optim.c's
 * arithmetic, operation by operation (no FMA: --fmad=false). The elementwise kernels loop
 * grid-stride (any launch shape gives the same bits); the two sum-of-squares kernels must run
 * with 256 threads a block (ORDER: BLOCK in this file). */
const char mpl_cuda_optim_src[] = {
#include "runtime/cuda/optim.cu.inc"
};

/* The fused attention's kernels: runtime/cuda/sdpa.cu, embedded the same way, compiled with
 * NVRTC the first time a device meets a pair of head sizes (mpl_cuda_sdpa_compile). */
const char mpl_cuda_sdpa_src[] = {
#include "runtime/cuda/sdpa.cu.inc"
};

/* The fused cross-entropy's row kernels: runtime/cuda/ce.cu, embedded the same way, compiled
 * with NVRTC the first time a device runs a JS_CE step (mpl_cuda_ce_compile). */
const char mpl_cuda_ce_src[] = {
#include "runtime/cuda/ce.cu.inc"
};

#ifdef MPL_HAVE_CUDA

#include <cublas_v2.h>
#include <cuda.h>
#include <nvrtc.h>

#include "cuda_rt.h"

#define CUBLAS_CHECK(call)                                                                              \
  do {                                                                                                  \
    cublasStatus_t s_ = (call);                                                                         \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      return mpl_errf(err, "cuBLAS: %s: %s (%s:%d)", #call, cublasGetStatusString(s_), __FILE__, __LINE__); \
  } while (0)

#define CU_CHECK(cd, call)                                                                       \
  do {                                                                                           \
    CUresult r_ = (call);                                                                        \
    if (r_ != CUDA_SUCCESS) return cu_fail(cd, r_, #call, __FILE__, __LINE__, err);             \
  } while (0)

#define NVRTC_CHECK(call)                                                                          \
  do {                                                                                             \
    nvrtcResult n_ = (call);                                                                       \
    if (n_ != NVRTC_SUCCESS) return nvrtc_fail(prog, n_, #call, err);                              \
  } while (0)

enum { BLOCK = 256, BLOCKS_PER_SM = 32 };
/* Sums of squares: SUMSQ_PER_BLOCK elements per block of partial sums, at most SUMSQ_PARTS
 * blocks (a function of n alone: the same tree on every GPU). ORDER: mpl_cuda_optim_src's
 * kernels assume BLOCK == 256 threads. */
enum { SUMSQ_PER_BLOCK = BLOCK * 16, SUMSQ_PARTS = 1024 };

/* The few driver API functions used, resolved through the runtime. */
typedef struct CuDriver {
  CUresult (*module_load)(CUmodule *, const void *, unsigned, CUjit_option *, void **);
  CUresult (*get_function)(CUfunction *, CUmodule, const char *);
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                     void **, void **);
  CUresult (*unload)(CUmodule);
  CUresult (*error_string)(CUresult, const char **);
  CUresult (*get_global)(CUdeviceptr *, size_t *, CUmodule, const char *);
} CuDriver;

/*
 * MPL_PROFILE=1: every kernel, product and optimizer launch on the compute stream is
 * bracketed by two events; at each sync (the end of a step) the elapsed times are added
 * up per name, the first step's left out, and when the device is freed a table goes to
 * stderr (GPU time per kernel over the other steps, calls, share). The events cost a
 * little time themselves: profile, then time without it.
 */
enum { PROF_GEMM, PROF_OPTIM, PROF_ACCUM, PROF_COPY, PROF_SDPA, PROF_SDPA_BWD, PROF_CE, PROF__FIXED };
static const char *const prof_fixed[PROF__FIXED] = {"cuBLAS sgemm",       "optimizer, norms, scaling",
                                                    "accumulate (saxpy)", "copies and zeroing",
                                                    "fused attention",    "fused attention, backward",
                                                    "fused cross-entropy rows"};
typedef struct Prof {
  bool on;
  int nslots;                 /* PROF__FIXED + kernels */
  char **names;               /* [nslots] */
  double *ms;                 /* [nslots] */
  int64_t *calls;             /* [nslots] */
  cudaEvent_t *ev;            /* [2 * cap]: start, end of each pending launch */
  int *slot;                  /* [cap] */
  int n, cap;
  int harvests;               /* syncs so far: the first (the warm-up step) is not counted */
  double wall_ms;             /* GPU time from each step's first launch to its last */
} Prof;

typedef struct CudaDev {
  int dev;
  bool ready;                 /* streams and handle exist */
  cudaStream_t compute, comm;
  cublasHandle_t blas;
  bool blas_ready;
  CuDriver drv;
  CUmodule mod;
  CUfunction *fn;             /* [nfn] */
  int *lanes;                 /* [nfn] threads per outer iteration: NAME_lanes (a warp), else 1 */
  int nfn;
  void **params;              /* kernel parameter scratch */
  int params_cap;
  long long scal[4];          /* seed, step, mb, n_outer of the launch being built */
  int max_blocks, sms;
  char arch[16];              /* "compute_90" */
  /* the optimizer kernels (mpl_cuda_optim_src) */
  CUmodule omod;
  CUfunction f_sgd, f_adamw, f_sumsq, f_sumsq_final, f_scale;
  double *partial;            /* [SUMSQ_PARTS] partial sums of squares */
  /* the fused attention's kernels, one module per pair of head sizes met (SDPA_MODS at most) */
  struct CudaSdpa {
    int hs, hv;
    CUmodule mod;
    CUfunction fwd, bwd_q, bwd_kv;
  } sdpa[8];
  int nsdpa;
  /* the fused cross-entropy's kernels (loaded on first use) and scratch (grown, kept) */
  CUmodule cemod;
  CUfunction ce_rows, ce_finish;
  float *ce_scratch;
  int64_t ce_cap;             /* floats */
  const atomic_int *stop;     /* set by an NCCL communicator: waits poll it (mpl_cuda_wait) */
  Prof prof;                  /* MPL_PROFILE=1: GPU time per kernel */
} CudaDev;

static int cu_fail(CudaDev *cd, CUresult r, const char *what, const char *file, int line, MplErr *err) {
  const char *msg = NULL;
  if (!cd->drv.error_string || cd->drv.error_string(r, &msg) != CUDA_SUCCESS || !msg) msg = "unknown error";
  return mpl_errf(err, "cuda driver: %s: %s (error %d, %s:%d)", what, msg, (int)r, file, line);
}

int mpl_cuda_device_count(int *count, MplErr *err) {
  *count = 0;
  cudaError_t e = cudaGetDeviceCount(count);
  if (e == cudaSuccess && *count > 0) return MPL_OK;
  cudaGetLastError();
  *count = 0;
  if (e == cudaSuccess || e == cudaErrorNoDevice) return mpl_errf(err, "cuda: no CUDA device found");
  if (e == cudaErrorInsufficientDriver)
    return mpl_errf(err, "cuda: no CUDA driver (the NVIDIA driver is missing or older than this CUDA runtime)");
  return mpl_errf(err, "cuda: cannot use the GPUs: %s", cudaGetErrorString(e));
}

void mpl_cuda_streams(MplDevice *d, cudaStream_t *compute, cudaStream_t *comm) {
  CudaDev *cd = d->impl;
  *compute = cd->compute;
  *comm = cd->comm;
}

void mpl_cuda_set_stop(MplDevice *d, const atomic_int *stop) {
  CudaDev *cd = d->impl;
  if (cd) cd->stop = stop;
}

/* Polls: a short spin with sched_yield, then 20 us sleeps (the GPU is not waited for
 * faster by spinning longer, and a stopped run is noticed within a few microseconds). */
int mpl_cuda_wait(cudaStream_t stream, cudaEvent_t event, const atomic_int *stop, MplErr *err) {
  if (!stop) {
    if (event) CUDA_CHECK(cudaEventSynchronize(event));
    else CUDA_CHECK(cudaStreamSynchronize(stream));
    return MPL_OK;
  }
  for (long spin = 0;; spin++) {
    cudaError_t e = event ? cudaEventQuery(event) : cudaStreamQuery(stream);
    if (e == cudaSuccess) return MPL_OK;
    if (e != cudaErrorNotReady) {
      cudaGetLastError();
      return mpl_errf(err, "cuda: %s: %s (%s:%d)", event ? "cudaEventQuery" : "cudaStreamQuery", cudaGetErrorString(e),
                      __FILE__, __LINE__);
    }
    if (atomic_load_explicit(stop, memory_order_acquire))
      return mpl_errf(err, "cuda: stopped waiting for the GPU: the run was aborted (another rank failed)");
    if (spin < 2000) sched_yield();
    else nanosleep(&(struct timespec){.tv_nsec = 20000}, NULL);
  }
}

/* ---- set-up -------------------------------------------------------------------------- */

static int driver_sym(const char *name, void **fp, MplErr *err) {
  enum cudaDriverEntryPointQueryResult q;
  CUDA_CHECK(cudaGetDriverEntryPointByVersion(name, fp, 12000, cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || !*fp) return mpl_errf(err, "cuda: the driver has no %s", name);
  return MPL_OK;
}

static int load_driver(CuDriver *drv, MplErr *err) {
  if (driver_sym("cuModuleLoadDataEx", (void **)&drv->module_load, err) != MPL_OK ||
      driver_sym("cuModuleGetFunction", (void **)&drv->get_function, err) != MPL_OK ||
      driver_sym("cuLaunchKernel", (void **)&drv->launch, err) != MPL_OK ||
      driver_sym("cuModuleUnload", (void **)&drv->unload, err) != MPL_OK ||
      driver_sym("cuGetErrorString", (void **)&drv->error_string, err) != MPL_OK ||
      driver_sym("cuModuleGetGlobal", (void **)&drv->get_global, err) != MPL_OK)
    return MPL_ERR;
  return MPL_OK;
}

static int load_optim(CudaDev *cd, MplErr *err);
static int launch_on_compute(CudaDev *cd, CUfunction f, int64_t blocks, int block, void **params, MplErr *err);
static void prof_harvest(CudaDev *cd);
static void prof_report(CudaDev *cd);

/* Streams, events and the cuBLAS handle of device cd->dev (already current). */
static int setup_device(CudaDev *cd, bool tf32, MplErr *err) {
  int sms = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, cd->dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, cd->dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, cd->dev));
  cd->sms = sms > 0 ? sms : 1;
  cd->max_blocks = cd->sms * BLOCKS_PER_SM;
  snprintf(cd->arch, sizeof cd->arch, "compute_%d%d", major, minor);
  CUDA_CHECK(cudaStreamCreateWithFlags(&cd->compute, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&cd->comm, cudaStreamNonBlocking));
  cd->ready = true;
  /* arenas and staging buffers of messages come from the stream-ordered pool: keep what
   * it holds; and an allocation never waits for a free on another stream (a free after
   * an NCCL send waits for the peer's recv: compute must not wait for that) */
  cudaMemPool_t pool;
  uint64_t keep = UINT64_MAX;
  int no = 0;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, cd->dev));
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolReuseAllowInternalDependencies, &no));
  CUBLAS_CHECK(cublasCreate(&cd->blas));
  cd->blas_ready = true;
  CUBLAS_CHECK(cublasSetStream(cd->blas, cd->compute));
  CUBLAS_CHECK(cublasSetMathMode(cd->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return load_driver(&cd->drv, err);
}

static int cuda_init(MplDevice *d, int index, int threads, MplErr *err) {
  d->index = index;
  d->threads = threads < 1 ? 1 : threads;
  int count;
  if (mpl_cuda_device_count(&count, err) != MPL_OK) return MPL_ERR;
  if (index < 0 || index >= count)
    return mpl_errf(err, "cuda: there is no device %d (this machine has %d: 0..%d)", index, count, count - 1);
  CudaDev *cd = mpl_calloc(1, sizeof *cd);
  if (!cd) return mpl_errf(err, "cuda: out of memory");
  d->impl = cd;
  cd->dev = index;
  CUDA_CHECK(cudaSetDevice(index));
  CUDA_CHECK(cudaFree(NULL)); /* creates the primary context now, not inside the first step */
  if (setup_device(cd, d->tf32, err) != MPL_OK) return MPL_ERR;
  return load_optim(cd, err);
}

static void cuda_free(MplDevice *d) {
  CudaDev *cd = d->impl;
  if (!cd) return;
  CUDA_SOFT(cudaSetDevice(cd->dev));
  if (cd->ready) {
    CUDA_SOFT(cudaStreamSynchronize(cd->compute));
    CUDA_SOFT(cudaStreamSynchronize(cd->comm));
  }
  prof_harvest(cd);
  if (cd->prof.nslots) prof_report(cd);
  if (cd->blas_ready) cublasDestroy(cd->blas);
  if (cd->partial) CUDA_SOFT(cudaFree(cd->partial));
  if (cd->mod && cd->drv.unload) cd->drv.unload(cd->mod);
  if (cd->omod && cd->drv.unload) cd->drv.unload(cd->omod);
  for (int i = 0; i < cd->nsdpa; i++)
    if (cd->sdpa[i].mod && cd->drv.unload) cd->drv.unload(cd->sdpa[i].mod);
  if (cd->cemod && cd->drv.unload) cd->drv.unload(cd->cemod);
  if (cd->ce_scratch) CUDA_SOFT(cudaFree(cd->ce_scratch));
  if (cd->ready) {
    CUDA_SOFT(cudaStreamDestroy(cd->compute));
    CUDA_SOFT(cudaStreamDestroy(cd->comm));
  }
  mpl_free(cd->fn);
  mpl_free(cd->lanes);
  mpl_free(cd->params);
  mpl_free(cd);
  d->impl = NULL;
}

static void cuda_bind_thread(MplDevice *d) {
  CudaDev *cd = d->impl;
  if (cd) CUDA_SOFT(cudaSetDevice(cd->dev));
}

/* From the stream-ordered pool on the compute stream, so that a free (also one in the
 * middle of a run) never synchronizes the device as cudaFree does: that would wait for
 * the NCCL sends in flight, i.e. for other ranks. */
static int cuda_arena_alloc(MplDevice *d, uint64_t bytes, void **base, MplErr *err) {
  CudaDev *cd = d->impl;
  *base = NULL;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  cudaError_t e = cudaMallocAsync(base, bytes ? (size_t)bytes : 256, cd->compute);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *base = NULL;
    return mpl_errf(err, "cuda: cannot allocate the arena of %llu bytes on device %d: %s", (unsigned long long)bytes,
                    cd->dev, cudaGetErrorString(e));
  }
  return mpl_cuda_wait(cd->compute, NULL, cd->stop, err); /* usable from any stream and the host's view */
}

static void cuda_arena_free(MplDevice *d, void *base) {
  CudaDev *cd = d->impl;
  if (!cd || !base) return;
  CUDA_SOFT(cudaSetDevice(cd->dev));
  CUDA_SOFT(cudaFreeAsync(base, cd->compute));
}

/* ---- MPL_PROFILE -------------------------------------------------------------------------- */

static void prof_off(Prof *p, const char *why) {
  fprintf(stderr, "mplrun: warning: MPL_PROFILE: %s; profiling stopped\n", why);
  p->on = false;
}

/* The slots: the fixed ones, then one per kernel of the job (names copied). */
static void prof_setup(CudaDev *cd, const JobKernels *k) {
  Prof *p = &cd->prof;
  const char *env = getenv("MPL_PROFILE");
  if (!env || strcmp(env, "1") || p->nslots) return;
  p->nslots = PROF__FIXED + (k ? k->nkernels : 0);
  p->names = mpl_calloc((size_t)p->nslots, sizeof *p->names);
  p->ms = mpl_calloc((size_t)p->nslots, sizeof *p->ms);
  p->calls = mpl_calloc((size_t)p->nslots, sizeof *p->calls);
  if (!p->names || !p->ms || !p->calls) return prof_off(p, "out of memory");
  p->on = true;
  for (int i = 0; i < p->nslots && p->on; i++)
    if (!(p->names[i] = mpl_strdup(i < PROF__FIXED ? prof_fixed[i] : k->names[i - PROF__FIXED])))
      prof_off(p, "out of memory");
}

static void prof_begin(CudaDev *cd, int slot) {
  Prof *p = &cd->prof;
  if (!p->on) return;
  if (p->n == p->cap) {
    int cap = p->cap ? 2 * p->cap : 512;
    cudaEvent_t *ev = mpl_realloc(p->ev, sizeof *ev * 2 * (size_t)cap);
    if (!ev) return prof_off(p, "out of memory");
    p->ev = ev;
    int *sl = mpl_realloc(p->slot, sizeof *sl * (size_t)cap);
    if (!sl) return prof_off(p, "out of memory");
    p->slot = sl;
    for (int i = 2 * p->cap; i < 2 * cap; i++)
      if (cudaEventCreate(&p->ev[i]) != cudaSuccess) {
        cudaGetLastError();
        for (int j = 2 * p->cap; j < i; j++) CUDA_SOFT(cudaEventDestroy(p->ev[j]));
        return prof_off(p, "cannot create CUDA events");
      }
    p->cap = cap;
  }
  p->slot[p->n] = slot;
  CUDA_SOFT(cudaEventRecord(p->ev[2 * p->n], cd->compute));
}

static void prof_end(CudaDev *cd) {
  Prof *p = &cd->prof;
  if (!p->on) return;
  CUDA_SOFT(cudaEventRecord(p->ev[2 * p->n + 1], cd->compute));
  p->n++;
}

/* After the compute stream is idle: the pending launches' times, added per slot (not
 * those before the first sync: cuBLAS and the pool warm up in the first step). */
static void prof_harvest(CudaDev *cd) {
  Prof *p = &cd->prof;
  if (!p->on) return;
  bool counted = p->harvests++ > 0;
  for (int i = 0; i < p->n && counted; i++) {
    float ms = 0, gap = 0;
    if (cudaEventElapsedTime(&ms, p->ev[2 * i], p->ev[2 * i + 1]) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    if (i > 0 && cudaEventElapsedTime(&gap, p->ev[2 * i - 1], p->ev[2 * i]) != cudaSuccess) cudaGetLastError(), gap = 0;
    p->wall_ms += ms + gap;
    p->ms[p->slot[i]] += ms;
    p->calls[p->slot[i]]++;
  }
  p->n = 0;
}

/* The table (GPU time per kernel over the run, the largest first), then the slots freed. */
static void prof_report(CudaDev *cd) {
  Prof *p = &cd->prof;
  int *order = mpl_malloc(sizeof(int) * (size_t)p->nslots);
  if (order) {
    double total = 0;
    int64_t calls = 0;
    for (int i = 0; i < p->nslots; i++) { /* insertion sort, the largest time first */
      int j = i;
      for (; j > 0 && p->ms[order[j - 1]] < p->ms[i]; j--) order[j] = order[j - 1];
      order[j] = i;
      total += p->ms[i], calls += p->calls[i];
    }
    fprintf(stderr,
            "MPL_PROFILE device %d, %d steps after the first: %lld launches, %.3f ms of GPU time in them, %.3f ms "
            "from each step's first launch to its last (the difference: the GPU waiting)\n",
            cd->dev, p->harvests > 0 ? p->harvests - 1 : 0, (long long)calls, total, p->wall_ms);
    /* memory: the high-water mark of the stream-ordered pool every arena, the optimizer
       state and the staging buffers come from (what cuBLAS and the context hold is not in it) */
    cudaMemPool_t pool;
    cuuint64_t high = 0;
    if (cudaDeviceGetDefaultMemPool(&pool, cd->dev) == cudaSuccess &&
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high) == cudaSuccess)
      fprintf(stderr, "MPL_PROFILE device %d memory: %llu bytes at most in use from the pool\n", cd->dev,
              (unsigned long long)high);
    fprintf(stderr, "  %10s %8s %9s %6s  %s\n", "ms", "calls", "us/call", "share", "kernel");
    for (int k = 0; k < p->nslots; k++) {
      int i = order[k];
      if (!p->calls[i]) continue;
      fprintf(stderr, "  %10.3f %8lld %9.1f %5.1f%%  %s\n", p->ms[i], (long long)p->calls[i],
              1e3 * p->ms[i] / (double)p->calls[i], total > 0 ? 100 * p->ms[i] / total : 0, p->names[i]);
    }
  }
  mpl_free(order);
  for (int i = 0; i < 2 * p->cap; i++) CUDA_SOFT(cudaEventDestroy(p->ev[i]));
  for (int i = 0; i < p->nslots && p->names; i++) mpl_free(p->names[i]);
  mpl_free(p->names);
  mpl_free(p->ms);
  mpl_free(p->calls);
  mpl_free(p->ev);
  mpl_free(p->slot);
  *p = (Prof){0};
}

/* ---- kernels ---------------------------------------------------------------------------- */

static int nvrtc_fail(nvrtcProgram prog, nvrtcResult r, const char *what, MplErr *err) {
  char log[400] = "";
  size_t n = 0;
  if (prog && nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) {
    char *full = mpl_malloc(n);
    if (full && nvrtcGetProgramLog(prog, full) == NVRTC_SUCCESS) snprintf(log, sizeof log, "%s", full);
    mpl_free(full);
  }
  if (prog) nvrtcDestroyProgram(&prog);
  return mpl_errf(err, "NVRTC: %s: %s%s%s", what, nvrtcGetErrorString(r), log[0] ? "\n" : "", log);
}

/* The PTX of a compiled program (*ptx mpl_malloc'd, NUL ended); destroys prog. */
static int take_ptx(nvrtcProgram prog, char **ptx, MplErr *err) {
  size_t n = 0;
  NVRTC_CHECK(nvrtcGetPTXSize(prog, &n));
  *ptx = mpl_malloc(n + 1);
  if (!*ptx) {
    nvrtcDestroyProgram(&prog);
    return mpl_errf(err, "cuda: out of memory");
  }
  (*ptx)[n] = 0;
  nvrtcResult r = nvrtcGetPTX(prog, *ptx);
  nvrtcDestroyProgram(&prog);
  if (r != NVRTC_SUCCESS) {
    mpl_free(*ptx);
    *ptx = NULL;
    return mpl_errf(err, "NVRTC: nvrtcGetPTX: %s", nvrtcGetErrorString(r));
  }
  return MPL_OK;
}

/* The job's CUDA source compiled for this device (mplc's options); *ptx is mpl_malloc'd. */
static int compile_source(CudaDev *cd, const char *src, char **ptx, MplErr *err) {
  char archopt[48];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", cd->arch);
  const char *opts[] = {archopt, "--fmad=false", "-default-device", "--prec-div=true", "--prec-sqrt=true"};
  nvrtcProgram prog = NULL;
  NVRTC_CHECK(nvrtcCreateProgram(&prog, src, "mpl_kernels.cu", 0, NULL, NULL));
  NVRTC_CHECK(nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts));
  return take_ptx(prog, ptx, err);
}

/* cuModuleLoadDataEx into *mod with the JIT's error log in the message. */
static int load_ptx_into(CudaDev *cd, CUmodule *mod, const char *what, const char *ptx, MplErr *err) {
  char log[2048] = "";
  CUjit_option o[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *v[] = {log, (void *)(uintptr_t)sizeof log};
  CUresult r = cd->drv.module_load(mod, ptx, 2, o, v);
  if (r == CUDA_SUCCESS) return MPL_OK;
  *mod = NULL;
  const char *msg = NULL;
  if (cd->drv.error_string(r, &msg) != CUDA_SUCCESS || !msg) msg = "unknown error";
  return mpl_errf(err, "cuda driver: cannot load %s: %s%s%.300s", what, msg, log[0] ? ": " : "", log);
}

static int load_ptx(CudaDev *cd, const char *ptx, MplErr *err) {
  return load_ptx_into(cd, &cd->mod, "the job's PTX", ptx, err);
}

/* The module: the job's PTX, or else its source through NVRTC for this GPU. */
static int load_module(CudaDev *cd, const JobKernels *k, MplErr *err) {
  MplErr first = {{0}};
  if (k->ptx && k->ptx_len > 0) {
    char *ptx = mpl_malloc(k->ptx_len + 1);
    if (!ptx) return mpl_errf(err, "cuda: out of memory");
    memcpy(ptx, k->ptx, k->ptx_len);
    ptx[k->ptx_len] = 0;
    int st = load_ptx(cd, ptx, &first);
    mpl_free(ptx);
    if (st == MPL_OK) return MPL_OK;
  }
  if (!k->cuda_src || k->cuda_src_len == 0)
    return first.msg[0] ? mpl_errf(err, "%s", first.msg) : mpl_errf(err, "cuda: the job has neither PTX nor CUDA source");
  char *ptx = NULL;
  if (compile_source(cd, k->cuda_src, &ptx, err) != MPL_OK) return MPL_ERR;
  int st = load_ptx(cd, ptx, err);
  mpl_free(ptx);
  if (st != MPL_OK && first.msg[0]) return mpl_errf(err, "%s (and after NVRTC here: %.200s)", first.msg, err->msg);
  return st;
}

static int cuda_load_kernels(MplDevice *d, const JobKernels *k, MplErr *err) {
  CudaDev *cd = d->impl;
  if (k->nkernels == 0) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (load_module(cd, k, err) != MPL_OK) return MPL_ERR;
  cd->fn = mpl_calloc((size_t)k->nkernels, sizeof *cd->fn);
  if (!cd->fn) return mpl_errf(err, "cuda: out of memory");
  cd->lanes = mpl_calloc((size_t)k->nkernels, sizeof *cd->lanes);
  if (!cd->lanes) return mpl_errf(err, "cuda: out of memory");
  for (int i = 0; i < k->nkernels; i++) {
    CUresult r = cd->drv.get_function(&cd->fn[i], cd->mod, k->names[i]);
    if (r != CUDA_SUCCESS) return cu_fail(cd, r, k->names[i], __FILE__, __LINE__, err);
    /* a warp kernel (cg_cuda.c) says so in `__constant__ int NAME_lanes` */
    char sym[300];
    CUdeviceptr p;
    size_t bytes = 0;
    snprintf(sym, sizeof sym, "%s_lanes", k->names[i]);
    cd->lanes[i] = 1;
    r = cd->drv.get_global(&p, &bytes, cd->mod, sym);
    if (r == CUDA_SUCCESS && bytes == sizeof(int)) {
      int v = 1;
      CUDA_CHECK(cudaMemcpy(&v, (const void *)(uintptr_t)p, sizeof v, cudaMemcpyDeviceToHost));
      if (v != 1 && v != 32) return mpl_errf(err, "cuda: kernel %s asks for %d lanes (1 or 32)", k->names[i], v);
      cd->lanes[i] = v;
    } else if (r != CUDA_SUCCESS && r != CUDA_ERROR_NOT_FOUND) {
      return cu_fail(cd, r, sym, __FILE__, __LINE__, err);
    }
  }
  prof_setup(cd, k);
  cd->nfn = k->nkernels;
  return MPL_OK;
}

/* Threads a block for n_outer iterations: BLOCK while that still gives every SM a block,
 * else halved down to one warp (row kernels: a thread per row, few rows). */
static int block_for(const CudaDev *cd, int64_t n_outer) {
  int block = BLOCK;
  while (block > 32 && n_outer < (int64_t)block * cd->sms) block /= 2;
  return block;
}

/* One thread per outer iteration (a warp for a kernel with lane loops), block_for threads a
 * block, at most max_blocks blocks (the kernels loop grid-stride, so any shape gives the
 * same values). */
static int cuda_launch(MplDevice *d, int kernel, void **args, int nargs, const int64_t *scalars, int64_t n_outer,
                       MplErr *err) {
  CudaDev *cd = d->impl;
  if (kernel < 0 || kernel >= cd->nfn) return mpl_errf(err, "cuda: kernel %d is not loaded", kernel);
  if (n_outer <= 0) return MPL_OK;
  if (nargs + 4 > cd->params_cap) {
    mpl_free(cd->params);
    cd->params = mpl_malloc(sizeof(void *) * (size_t)(nargs + 4));
    cd->params_cap = cd->params ? nargs + 4 : 0;
    if (!cd->params) return mpl_errf(err, "cuda: out of memory");
  }
  for (int i = 0; i < nargs; i++) cd->params[i] = &args[i];
  cd->scal[0] = scalars[0], cd->scal[1] = scalars[1], cd->scal[2] = scalars[2], cd->scal[3] = n_outer;
  for (int i = 0; i < 4; i++) cd->params[nargs + i] = &cd->scal[i];
  int64_t threads = n_outer * cd->lanes[kernel]; /* a warp per outer iteration for lane kernels */
  int block = block_for(cd, threads);
  int64_t blocks = (threads + block - 1) / block;
  if (blocks > cd->max_blocks) blocks = cd->max_blocks;
  prof_begin(cd, PROF__FIXED + kernel);
  int st = launch_on_compute(cd, cd->fn[kernel], blocks, block, cd->params, err);
  prof_end(cd);
  return st;
}

static int cuda_kernel(MplDevice *d, MplKernelFn fn, void **args, const int64_t *scalars, int64_t n_outer,
                       int64_t work, MplErr *err) {
  return mpl_errf(err, "cuda: CPU kernels cannot run on a GPU (internal: use launch)");
}

/* ---- products, accumulation, memory ------------------------------------------------------ */

/* Row-major C = alpha op(A) op(B) + beta C as column-major C^T = op(B)^T op(A)^T. */
static int cuda_gemm(MplDevice *d, const JobStep *s, const float *a, const float *b, float *c, MplErr *err) {
  CudaDev *cd = d->impl;
  int64_t batch = s->batch < 1 ? 1 : s->batch;
  if (s->M == 0 || s->N == 0) return MPL_OK;
  int lda = (int)(s->ta ? s->M : s->K), ldb = (int)(s->tb ? s->K : s->N), ldc = (int)s->N;
  if (lda < 1) lda = 1;
  if (ldb < 1) ldb = 1;
  float alpha = (float)s->alpha, beta = (float)s->beta;
  const float *A = a, *B = b; /* the executor applied the batch offsets */
  float *C = c;
  cublasOperation_t opb = s->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = s->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  prof_begin(cd, PROF_GEMM);
  cublasStatus_t st;
  if (s->prec == PREC_F32) { /* the handle's math mode: FP32, or TF32 under mplrun --tf32 */
    st = batch == 1 ? cublasSgemm(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B, ldb, A, lda, &beta, C, ldc)
                    : cublasSgemmStridedBatched(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B, ldb,
                                                s->stride_b, A, lda, s->stride_a, &beta, C, ldc, s->stride_c, (int)batch);
  } else { /* tf32: TF32 tensor cores; bf16: A and B hold bf16 values, so the down-conversion is exact */
    cublasComputeType_t ct = s->prec == PREC_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F_FAST_TF32;
    st = batch == 1 ? cublasGemmEx(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B, CUDA_R_32F, ldb, A,
                                   CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT)
                    : cublasGemmStridedBatchedEx(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B,
                                                 CUDA_R_32F, ldb, s->stride_b, A, CUDA_R_32F, lda, s->stride_a, &beta, C,
                                                 CUDA_R_32F, ldc, s->stride_c, (int)batch, ct, CUBLAS_GEMM_DEFAULT);
  }
  prof_end(cd);
  CUBLAS_CHECK(st);
  return MPL_OK;
}

/* acc += src as saxpy with alpha 1: fma(1, x, y) rounds exactly like x + y. */
static int cuda_accum_f32(MplDevice *d, float *acc, const float *src, int64_t n, MplErr *err) {
  CudaDev *cd = d->impl;
  const float one = 1.0f;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  for (int64_t i = 0; i < n; i += (1 << 30)) {
    int64_t k = n - i < (1 << 30) ? n - i : (1 << 30);
    prof_begin(cd, PROF_ACCUM);
    cublasStatus_t st = cublasSaxpy(cd->blas, (int)k, &one, src + i, 1, acc + i, 1);
    prof_end(cd);
    CUBLAS_CHECK(st);
  }
  return MPL_OK;
}

static int cuda_zero(MplDevice *d, void *dst, size_t bytes, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!bytes) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  prof_begin(cd, PROF_COPY);
  cudaError_t st = cudaMemsetAsync(dst, 0, bytes, cd->compute);
  prof_end(cd);
  CUDA_CHECK(st);
  return MPL_OK;
}

bool mpl_cuda_is_device_ptr(const void *p) {
  struct cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

static int cuda_copy_to_host(MplDevice *d, void *host, const void *dev, size_t bytes, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!bytes) return MPL_OK;
  if (!mpl_cuda_is_device_ptr(dev)) { /* host memory on both sides: a plain copy */
    memmove(host, dev, bytes);
    return MPL_OK;
  }
  CUDA_CHECK(cudaSetDevice(cd->dev));
  /* with a stop flag, first the abortable wait: a copy to pageable memory blocks the host
   * until the stream reaches it, which a stuck NCCL operation would make forever */
  if (cd->stop && mpl_cuda_wait(cd->compute, NULL, cd->stop, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDefault, cd->compute));
  CUDA_CHECK(cudaStreamSynchronize(cd->compute));
  return MPL_OK;
}

/* From pageable memory the call returns once the host bytes are staged: the caller may
 * reuse its buffer at once; the copy stays ordered on the compute stream. */
static int cuda_copy_from_host(MplDevice *d, void *dev, const void *host, size_t bytes, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!bytes) return MPL_OK;
  if (!mpl_cuda_is_device_ptr(dev)) { /* host memory on both sides: a plain copy */
    memmove(dev, host, bytes);
    return MPL_OK;
  }
  CUDA_CHECK(cudaSetDevice(cd->dev));
  CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyDefault, cd->compute));
  return MPL_OK;
}

static int cuda_sync(MplDevice *d, MplErr *err) {
  CudaDev *cd = d->impl;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (mpl_cuda_wait(cd->comm, NULL, cd->stop, err) != MPL_OK || mpl_cuda_wait(cd->compute, NULL, cd->stop, err) != MPL_OK)
    return MPL_ERR;
  CUDA_CHECK(cudaGetLastError());
  prof_harvest(cd);
  return MPL_OK;
}

/* ---- the optimizer on the device ----------------------------------------------------- */

int mpl_cuda_optim_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  char archopt[48];
  *ptx = NULL;
  if (logn) log[0] = 0;
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  const char *opts[] = {archopt, "--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false"};
  nvrtcProgram prog = NULL;
  NVRTC_CHECK(nvrtcCreateProgram(&prog, mpl_cuda_optim_src, "mpl_optim.cu", 0, NULL, NULL));
  nvrtcResult r = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
  size_t n = 0;
  if (logn && nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) {
    char *full = mpl_malloc(n);
    if (full && nvrtcGetProgramLog(prog, full) == NVRTC_SUCCESS) snprintf(log, logn, "%s", full);
    mpl_free(full);
  }
  if (r != NVRTC_SUCCESS) return nvrtc_fail(prog, r, "nvrtcCompileProgram (the optimizer kernels)", err);
  return take_ptx(prog, ptx, err);
}

static int optim_fn(CudaDev *cd, CUfunction *f, const char *name, MplErr *err) {
  CUresult r = cd->drv.get_function(f, cd->omod, name);
  return r == CUDA_SUCCESS ? MPL_OK : cu_fail(cd, r, name, __FILE__, __LINE__, err);
}

/* At init: the optimizer kernels for this GPU, their handles, the partial-sums buffer. */
static int load_optim(CudaDev *cd, MplErr *err) {
  char *ptx = NULL, log[1024];
  if (mpl_cuda_optim_compile(cd->arch, &ptx, log, sizeof log, err) != MPL_OK) return MPL_ERR;
  int st = load_ptx_into(cd, &cd->omod, "the optimizer kernels", ptx, err);
  mpl_free(ptx);
  if (st != MPL_OK) return MPL_ERR;
  if (optim_fn(cd, &cd->f_sgd, "mpl_sgd", err) != MPL_OK || optim_fn(cd, &cd->f_adamw, "mpl_adamw", err) != MPL_OK ||
      optim_fn(cd, &cd->f_scale, "mpl_scale", err) != MPL_OK || optim_fn(cd, &cd->f_sumsq, "mpl_sumsq", err) != MPL_OK ||
      optim_fn(cd, &cd->f_sumsq_final, "mpl_sumsq_final", err) != MPL_OK)
    return MPL_ERR;
  CUDA_CHECK(cudaMalloc((void **)&cd->partial, sizeof(double) * SUMSQ_PARTS));
  return MPL_OK;
}

/* Queues f on the compute stream; the launch's result and then the last error checked. */
static int launch_on_compute(CudaDev *cd, CUfunction f, int64_t blocks, int block, void **params, MplErr *err) {
  CUDA_CHECK(cudaSetDevice(cd->dev));
  CU_CHECK(cd, cd->drv.launch(f, (unsigned)blocks, 1, 1, (unsigned)block, 1, 1, 0, (CUstream)cd->compute, params, NULL));
  CUDA_CHECK(cudaGetLastError());
  return MPL_OK;
}

/* launch_on_compute of an optimizer kernel, profiled as one. */
static int launch_optim(CudaDev *cd, CUfunction f, int64_t blocks, int block, void **params, MplErr *err) {
  prof_begin(cd, PROF_OPTIM);
  int st = launch_on_compute(cd, f, blocks, block, params, err);
  prof_end(cd);
  return st;
}

/* Blocks of BLOCK threads for an elementwise loop over n (grid-stride past max_blocks). */
static int64_t elementwise_blocks(const CudaDev *cd, int64_t n) {
  int64_t b = (n + BLOCK - 1) / BLOCK;
  return b < 1 ? 1 : b > cd->max_blocks ? cd->max_blocks : b;
}

static int cuda_copy_device(MplDevice *d, void *dst, const void *src, size_t bytes, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!bytes || dst == src) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  prof_begin(cd, PROF_COPY);
  cudaError_t st = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cd->compute);
  prof_end(cd);
  CUDA_CHECK(st);
  return MPL_OK;
}

static int cuda_copy_2d(MplDevice *d, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        size_t height, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!width || !height) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  prof_begin(cd, PROF_COPY);
  cudaError_t st = cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, cd->compute);
  prof_end(cd);
  CUDA_CHECK(st);
  return MPL_OK;
}

/* Two launches: partial sums (a number of blocks fixed by n), then their fixed-tree sum. */
static int cuda_sumsq_f64(MplDevice *d, const float *g, int64_t n, double *out, MplErr *err) {
  CudaDev *cd = d->impl;
  int64_t parts = (n + SUMSQ_PER_BLOCK - 1) / SUMSQ_PER_BLOCK;
  if (parts < 1) parts = 1;
  if (parts > SUMSQ_PARTS) parts = SUMSQ_PARTS;
  long long nn = (long long)n;
  int np = (int)parts;
  void *a1[] = {(void *)&g, &nn, &cd->partial};
  if (launch_optim(cd, cd->f_sumsq, parts, BLOCK, a1, err) != MPL_OK) return MPL_ERR;
  void *a2[] = {&cd->partial, &np, &out};
  return launch_optim(cd, cd->f_sumsq_final, 1, BLOCK, a2, err);
}

static int cuda_scale_f32(MplDevice *d, float *g, int64_t n, float coef, MplErr *err) {
  CudaDev *cd = d->impl;
  if (n <= 0) return MPL_OK;
  long long nn = (long long)n;
  void *a[] = {&g, &nn, &coef};
  return launch_optim(cd, cd->f_scale, elementwise_blocks(cd, n), BLOCK, a, err);
}

static int cuda_sgd(MplDevice *d, float *p, const float *g, float *buf, int64_t n, double lr, double momentum,
                    bool first_step, MplErr *err) {
  CudaDev *cd = d->impl;
  if (n <= 0) return MPL_OK;
  long long nn = (long long)n;
  float neg_lr = (float)-lr, mom = (float)momentum; /* as mpl_sgd_update rounds them */
  int mode = (momentum == 0 || !buf) ? 0 : first_step ? 1 : 2;
  void *a[] = {&p, (void *)&g, &buf, &nn, &neg_lr, &mom, &mode};
  return launch_optim(cd, cd->f_sgd, elementwise_blocks(cd, n), BLOCK, a, err);
}

static int cuda_adamw(MplDevice *d, float *p, const float *g, float *m, float *v, int64_t n, double lr, double beta1,
                      double beta2, double eps, double weight_decay, int64_t t, MplErr *err) {
  CudaDev *cd = d->impl;
  if (n <= 0) return MPL_OK;
  MplAdamWScalars s;
  mpl_adamw_scalars(&s, lr, beta1, beta2, eps, weight_decay, t);
  long long nn = (long long)n;
  int do_decay = s.do_decay, small = s.small;
  void *a[] = {&p,         (void *)&g, &m,     &v,          &nn,   &s.decay,  &s.w1,  &s.b2,
               &s.w2,      &s.neg_step, &s.bc2_sqrt, &s.eps, &do_decay, &small};
  return launch_optim(cd, cd->f_adamw, elementwise_blocks(cd, n), BLOCK, a, err);
}

/* ---- the fused attention (runtime/cuda/sdpa.cu) ------------------------------------------- */

int mpl_cuda_sdpa_compile(const char *arch, int hs, int hv, char **ptx, char *log, size_t logn, MplErr *err) {
  char archopt[48], dhs[40], dhv[40];
  *ptx = NULL;
  if (logn) log[0] = 0;
  if (hs < 1 || hs > MPL_SDPA_MAX_HEAD || hv < 1 || hv > MPL_SDPA_MAX_HEAD)
    return mpl_errf(err, "the fused attention takes head sizes up to %d, not %d and %d", MPL_SDPA_MAX_HEAD, hs, hv);
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  snprintf(dhs, sizeof dhs, "-DMPL_SDPA_HS=%d", hs);
  snprintf(dhv, sizeof dhv, "-DMPL_SDPA_HV=%d", hv);
  const char *opts[] = {archopt, dhs, dhv, "--ftz=false", "--prec-div=true"};
  nvrtcProgram prog = NULL;
  NVRTC_CHECK(nvrtcCreateProgram(&prog, mpl_cuda_sdpa_src, "mpl_sdpa.cu", 0, NULL, NULL));
  nvrtcResult r = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
  size_t n = 0;
  if (logn && nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) {
    char *full = mpl_malloc(n);
    if (full && nvrtcGetProgramLog(prog, full) == NVRTC_SUCCESS) snprintf(log, logn, "%s", full);
    mpl_free(full);
  }
  if (r != NVRTC_SUCCESS) return nvrtc_fail(prog, r, "nvrtcCompileProgram (the fused attention)", err);
  return take_ptx(prog, ptx, err);
}

/* The kernels for head sizes hs and hv: compiled and loaded the first time they are met. */
static const struct CudaSdpa *sdpa_kernels(CudaDev *cd, int hs, int hv, MplErr *err) {
  for (int i = 0; i < cd->nsdpa; i++)
    if (cd->sdpa[i].hs == hs && cd->sdpa[i].hv == hv) return &cd->sdpa[i];
  if (cd->nsdpa == (int)(sizeof cd->sdpa / sizeof cd->sdpa[0])) {
    mpl_errf(err, "cuda: more than %d head sizes of fused attention in one job", cd->nsdpa);
    return NULL;
  }
  struct CudaSdpa *k = &cd->sdpa[cd->nsdpa];
  char *ptx = NULL, log[1024];
  if (mpl_cuda_sdpa_compile(cd->arch, hs, hv, &ptx, log, sizeof log, err) != MPL_OK) return NULL;
  cudaError_t ce = cudaSetDevice(cd->dev);
  if (ce != cudaSuccess) {
    cudaGetLastError();
    mpl_free(ptx);
    mpl_errf(err, "cuda: cudaSetDevice: %s", cudaGetErrorString(ce));
    return NULL;
  }
  int st = load_ptx_into(cd, &k->mod, "the fused attention's kernels", ptx, err);
  mpl_free(ptx);
  if (st != MPL_OK) return NULL;
  const char *names[3] = {"mpl_sdpa_fwd", "mpl_sdpa_bwd_q", "mpl_sdpa_bwd_kv"};
  CUfunction *fns[3] = {&k->fwd, &k->bwd_q, &k->bwd_kv};
  for (int i = 0; i < 3; i++) {
    CUresult r = cd->drv.get_function(fns[i], k->mod, names[i]);
    if (r != CUDA_SUCCESS) {
      cu_fail(cd, r, names[i], __FILE__, __LINE__, err);
      cd->drv.unload(k->mod);
      return NULL;
    }
  }
  k->hs = hs, k->hv = hv;
  cd->nsdpa++;
  return k;
}

/* Blocks of SDPA_THREADS rows (ORDER: SDPA_BR in runtime/cuda/sdpa.cu) over heads x rows. */
enum { SDPA_THREADS = 64 };
static int64_t sdpa_blocks(int64_t batch, int64_t heads, int64_t rows) {
  return batch * heads * ((rows + SDPA_THREADS - 1) / SDPA_THREADS);
}

static int cuda_sdpa(MplDevice *d, const MplSdpa *a, MplErr *err) {
  CudaDev *cd = d->impl;
  const struct CudaSdpa *k = sdpa_kernels(cd, (int)a->hs, (int)a->hv, err);
  if (!k) return MPL_ERR;
  long long T = a->T, S = a->S;
  int H = (int)a->H, Hkv = (int)a->Hkv, causal = a->causal, bf16 = a->bf16;
  float scale = a->scale;
  void *p[] = {(void *)&a->q, (void *)&a->k, (void *)&a->v, (void *)&a->out, (void *)&a->lse, &T, &S,
               &H,            &Hkv,          &scale,        &causal,         &bf16};
  prof_begin(cd, PROF_SDPA);
  int st = launch_on_compute(cd, k->fwd, sdpa_blocks(a->B, a->H, a->T), SDPA_THREADS, p, err);
  prof_end(cd);
  return st;
}

static int cuda_sdpa_bwd(MplDevice *d, const MplSdpa *a, MplErr *err) {
  CudaDev *cd = d->impl;
  const struct CudaSdpa *k = sdpa_kernels(cd, (int)a->hs, (int)a->hv, err);
  if (!k) return MPL_ERR;
  long long T = a->T, S = a->S;
  int H = (int)a->H, Hkv = (int)a->Hkv, causal = a->causal, bf16 = a->bf16;
  float scale = a->scale;
  void *pq[] = {(void *)&a->q, (void *)&a->k, (void *)&a->v, (void *)&a->out, (void *)&a->lse, (void *)&a->dout,
                (void *)&a->dq, &T, &S, &H, &Hkv, &scale, &causal, &bf16};
  void *pkv[] = {(void *)&a->q,  (void *)&a->k,  (void *)&a->v, (void *)&a->out, (void *)&a->lse, (void *)&a->dout,
                 (void *)&a->dk, (void *)&a->dv, &T,            &S,              &H,              &Hkv,
                 &scale,         &causal,        &bf16};
  prof_begin(cd, PROF_SDPA_BWD);
  int st = launch_on_compute(cd, k->bwd_q, sdpa_blocks(a->B, a->H, a->T), SDPA_THREADS, pq, err);
  if (st == MPL_OK) st = launch_on_compute(cd, k->bwd_kv, sdpa_blocks(a->B, a->Hkv, a->S), SDPA_THREADS, pkv, err);
  prof_end(cd);
  return st;
}

/* ---- the fused cross-entropy (runtime/cuda/ce.cu; issue 14 item 3) ---------------------------
 * ce_cpu.c's algorithm: per chunk of classes the logits by cuBLAS into the scratch, the row
 * kernels, and backward the two products of g; the scratch (s, m, tl, then L [N, chunk], as
 * the CPU's) is the device's, grown to the largest step met. */

int mpl_cuda_ce_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  char archopt[48];
  *ptx = NULL;
  if (logn) log[0] = 0;
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  const char *opts[] = {archopt, "--ftz=false", "--prec-div=true"};
  nvrtcProgram prog = NULL;
  NVRTC_CHECK(nvrtcCreateProgram(&prog, mpl_cuda_ce_src, "mpl_ce.cu", 0, NULL, NULL));
  nvrtcResult r = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
  size_t n = 0;
  if (logn && nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) {
    char *full = mpl_malloc(n);
    if (full && nvrtcGetProgramLog(prog, full) == NVRTC_SUCCESS) snprintf(log, logn, "%s", full);
    mpl_free(full);
  }
  if (r != NVRTC_SUCCESS) return nvrtc_fail(prog, r, "nvrtcCompileProgram (the fused cross-entropy)", err);
  return take_ptx(prog, ptx, err);
}

enum { CE_THREADS = 256 }; /* ORDER: CE_THREADS in runtime/cuda/ce.cu */

static int ce_kernels(CudaDev *cd, MplErr *err) {
  if (cd->cemod) return MPL_OK;
  char *ptx = NULL, log[1024];
  if (mpl_cuda_ce_compile(cd->arch, &ptx, log, sizeof log, err) != MPL_OK) return MPL_ERR;
  cudaError_t e = cudaSetDevice(cd->dev);
  if (e != cudaSuccess) {
    cudaGetLastError();
    mpl_free(ptx);
    return mpl_errf(err, "cuda: cudaSetDevice: %s", cudaGetErrorString(e));
  }
  int st = load_ptx_into(cd, &cd->cemod, "the fused cross-entropy's kernels", ptx, err);
  mpl_free(ptx);
  if (st != MPL_OK) return MPL_ERR;
  const char *names[2] = {"mpl_ce_rows", "mpl_ce_finish"};
  CUfunction *fns[2] = {&cd->ce_rows, &cd->ce_finish};
  for (int i = 0; i < 2; i++) {
    CUresult r = cd->drv.get_function(fns[i], cd->cemod, names[i]);
    if (r != CUDA_SUCCESS) {
      cu_fail(cd, r, names[i], __FILE__, __LINE__, err);
      cd->drv.unload(cd->cemod);
      cd->cemod = NULL;
      return MPL_ERR;
    }
  }
  return MPL_OK;
}

/* Row-major C = op(A) op(B) + beta C (explicit leading dimensions), as cuda_gemm does it. */
static int ce_gemm(CudaDev *cd, bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, MplErr *err) {
  const float alpha = 1.0f;
  cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  prof_begin(cd, PROF_GEMM);
  cublasStatus_t st =
      bf16 ? cublasGemmEx(cd->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_32F, (int)ldb, A, CUDA_R_32F,
                          (int)lda, &beta, C, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT)
           : cublasSgemm(cd->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C,
                         (int)ldc);
  prof_end(cd);
  CUBLAS_CHECK(st);
  return MPL_OK;
}

/* JS_CE over blocks of rows: per block the logits by cuBLAS, mpl_ce_rows (loss per row, g in
 * place), dx1 of the block and dw1 (+)= by cuBLAS; then mpl_ce_finish (the mean loss). */
static int cuda_ce(MplDevice *d, const MplCe *a, MplErr *err) {
  CudaDev *cd = d->impl;
  if (a->N < 1 || a->K < 1 || a->V < 1 || a->chunk < 1 || a->chunk > a->N || a->N > INT32_MAX ||
      a->K > INT32_MAX || a->V > INT32_MAX || a->chunk * a->V > INT32_MAX)
    return mpl_errf(err, "cuda: the fused cross-entropy's sizes (N %lld, K %lld, V %lld, rows %lld) exceed cuBLAS's",
                    (long long)a->N, (long long)a->K, (long long)a->V, (long long)a->chunk);
  if (ce_kernels(cd, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  int64_t need = mpl_ce_cpu_scratch(a);
  if (need > cd->ce_cap) { /* stream-ordered, from the pool the arenas come from (its peak counts it) */
    if (cd->ce_scratch) CUDA_CHECK(cudaFreeAsync(cd->ce_scratch, cd->compute));
    cd->ce_scratch = NULL, cd->ce_cap = 0;
    cudaError_t e = cudaMallocAsync((void **)&cd->ce_scratch, (size_t)need * sizeof(float), cd->compute);
    if (e != cudaSuccess) {
      cudaGetLastError();
      cd->ce_scratch = NULL;
      return mpl_errf(err, "cuda: no memory for the cross-entropy's block of logits (%lld bytes): %s",
                      (long long)need * 4, cudaGetErrorString(e));
    }
    cd->ce_cap = need;
  }
  double *loss = (double *)(void *)cd->ce_scratch;
  float *L = cd->ce_scratch + 2 * a->N, scale = (float)(1.0 / (double)a->N);
  long long N = a->N, V = a->V;
  int bf16 = a->bf16;
  int64_t K = a->K;
  for (int64_t r0 = 0; r0 < a->N; r0 += a->chunk) {
    long long rr = a->N - r0 < a->chunk ? a->N - r0 : a->chunk, lr0 = r0;
    const float *xb = a->x + r0 * K;
    if (ce_gemm(cd, bf16, false, a->tb, rr, V, K, xb, K, a->w, a->tb ? K : V, 0.0f, L, V, err) != MPL_OK)
      return MPL_ERR;
    void *p[] = {&L, &V, &lr0, (void *)&a->targets, &loss, &scale, &bf16};
    prof_begin(cd, PROF_CE);
    int st = launch_on_compute(cd, cd->ce_rows, rr, CE_THREADS, p, err);
    prof_end(cd);
    if (st != MPL_OK) return MPL_ERR;
    if (ce_gemm(cd, bf16, false, !a->tb, rr, K, V, L, V, a->w, a->tb ? K : V, 0.0f, a->dx + r0 * K, K, err) != MPL_OK)
      return MPL_ERR;
    float beta = r0 ? 1.0f : 0.0f;
    st = a->tb ? ce_gemm(cd, bf16, true, false, V, K, rr, L, V, xb, K, beta, a->dw, K, err)
               : ce_gemm(cd, bf16, true, false, K, V, rr, xb, K, L, V, beta, a->dw, V, err);
    if (st != MPL_OK) return MPL_ERR;
  }
  void *pf[] = {&loss, (void *)&a->loss, &N};
  prof_begin(cd, PROF_CE);
  int st = launch_on_compute(cd, cd->ce_finish, 1, CE_THREADS, pf, err);
  prof_end(cd);
  return st;
}

/* ---- the device's communicator (comm_nccl.c and its world files), through the table ---- */

static int cuda_world_init(void **w, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err) {
  return mpl_cuda_world_init((MplCudaWorld **)w, nranks, devs, mesh, err);
}
static MplComm *cuda_world_rank(void *w, int r) { return mpl_cuda_world_rank(w, r); }
static void cuda_world_abort(void *w, const char *why) { mpl_cuda_world_abort(w, why); }
static void cuda_world_free(void *w) { mpl_cuda_world_free(w); }

const MplDeviceOps mpl_device_cuda_ops = {
    .name = "cuda",
    .init = cuda_init,
    .free = cuda_free,
    .bind_thread = cuda_bind_thread,
    .arena_alloc = cuda_arena_alloc,
    .arena_free = cuda_arena_free,
    .kernel = cuda_kernel,
    .gemm = cuda_gemm,
    .accum_f32 = cuda_accum_f32,
    .sdpa = cuda_sdpa,
    .sdpa_bwd = cuda_sdpa_bwd,
    .ce = cuda_ce,
    .zero = cuda_zero,
    .copy_to_host = cuda_copy_to_host,
    .copy_from_host = cuda_copy_from_host,
    .device_memory = true,
    .load_kernels = cuda_load_kernels,
    .launch = cuda_launch,
    .sync = cuda_sync,
    .copy_device = cuda_copy_device,
    .copy_2d = cuda_copy_2d,
    .sumsq_f64 = cuda_sumsq_f64,
    .scale_f32 = cuda_scale_f32,
    .sgd = cuda_sgd,
    .adamw = cuda_adamw,
    .world_init = cuda_world_init,
    .world_rank = cuda_world_rank,
    .world_abort = cuda_world_abort,
    .world_free = cuda_world_free,
    .mpi_init = mpl_cuda_mpi_init,
    .count = mpl_cuda_device_count,
};

#else /* !MPL_HAVE_CUDA: every entry point says so */

int mpl_cuda_device_count(int *count, MplErr *err) {
  *count = 0;
  return mpl_errf(err, "this mplrun was built without CUDA");
}

static int nocuda_init(MplDevice *d, int index, int threads, MplErr *err) {
  d->impl = NULL;
  return mpl_errf(err, "this mplrun was built without CUDA");
}

static void nocuda_free(MplDevice *d) { d->impl = NULL; }

int mpl_cuda_optim_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  *ptx = NULL;
  if (logn) log[0] = 0;
  return mpl_errf(err, "this mplrun was built without CUDA (no NVRTC for %s)", arch);
}

int mpl_cuda_sdpa_compile(const char *arch, int hs, int hv, char **ptx, char *log, size_t logn, MplErr *err) {
  *ptx = NULL;
  if (logn) log[0] = 0;
  return mpl_errf(err, "this mplrun was built without CUDA (no NVRTC for %s)", arch);
}

int mpl_cuda_ce_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  *ptx = NULL;
  if (logn) log[0] = 0;
  return mpl_errf(err, "this mplrun was built without CUDA (no NVRTC for %s)", arch);
}

/* ---- the device's communicator (comm_nccl.c and its world files), through the table ---- */

static int cuda_world_init(void **w, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err) {
  return mpl_cuda_world_init((MplCudaWorld **)w, nranks, devs, mesh, err);
}
static MplComm *cuda_world_rank(void *w, int r) { return mpl_cuda_world_rank(w, r); }
static void cuda_world_abort(void *w, const char *why) { mpl_cuda_world_abort(w, why); }
static void cuda_world_free(void *w) { mpl_cuda_world_free(w); }

const MplDeviceOps mpl_device_cuda_ops = {
    .name = "cuda",
    .init = nocuda_init,
    .free = nocuda_free,
    .device_memory = true,
    .world_init = cuda_world_init,
    .world_rank = cuda_world_rank,
    .world_abort = cuda_world_abort,
    .world_free = cuda_world_free,
    .mpi_init = mpl_cuda_mpi_init,
    .count = mpl_cuda_device_count,
};

#endif
