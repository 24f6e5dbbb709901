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
 *  - MPL_CUDA_GRAPHS (device_cuda_graph.c): every entry point that queues work on the compute
 *    stream calls cudev_graph_op before it (the work may then be captured, not run), and
 *    every one that copies to or from the host, waits, allocates or frees calls
 *    cudev_graph_flush first (what was captured is launched as a graph); cuBLAS has a
 *    workspace of its own from setup_device on, graphs or not;
 *  - the runtime's own CUDA programs (the optimizer, whose update of a param matches the
 *    CPU's bits for the same gradient; the fused attention; the fused cross-entropy) and
 *    NVRTC are device_cuda_progs.c's; the state both files share is cuda_dev.h's.
 */
#include "exec.h"

#include <sched.h>
#include <string.h>
#include <time.h>

/* ---- the device's communicator (comm_nccl.c and its world files), through the table (built with
   CUDA or without: comm_nccl.c answers for both) ---- */

static int cuda_world_init(void **w, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err) {
  return mpl_cuda_world_init((MplCudaWorld **)w, nranks, devs, mesh, err);
}
static MplComm *cuda_world_rank(void *w, int r) { return mpl_cuda_world_rank(w, r); }
static void cuda_world_abort(void *w, const char *why) { mpl_cuda_world_abort(w, why); }
static void cuda_world_free(void *w) { mpl_cuda_world_free(w); }

#ifdef MPL_HAVE_CUDA

#include "cuda_dev.h"

/* MPL_PROFILE's fixed slots, named (ORDER: PROF_* in cuda_dev.h) */
static const char *const prof_fixed[PROF__FIXED] = {"cuBLAS sgemm",       "optimizer, norms, scaling",
                                                    "accumulate (saxpy)", "copies and zeroing",
                                                    "fused attention",    "fused attention, backward",
                                                    "fused cross-entropy rows", "embedding gradients"};


int cudev_fail(CudaDev *cd, CUresult r, const char *what, const char *file, int line, MplErr *err) {
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

void mpl_cuda_drop(MplDevice *d) {
  CudaDev *cd = d ? d->impl : NULL;
  if (!cd || !cd->graphs.capturing) return;
  CUDA_SOFT(cudaSetDevice(cd->dev));
  cudev_graph_drop(cd);
}

int mpl_cuda_flush(MplDevice *d, MplErr *err) {
  CudaDev *cd = d ? d->impl : NULL;
  if (!cd || !cd->graphs.capturing) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  return cudev_graph_flush(cd, err);
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
  if (mpl_cublas_load(err) != MPL_OK) return MPL_ERR;
  CUBLAS_CHECK(mpl_cublas.create(&cd->blas));
  cd->blas_ready = true;
  CUBLAS_CHECK(mpl_cublas.set_stream(cd->blas, cd->compute));
  CUBLAS_CHECK(mpl_cublas.set_math_mode(cd->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  /* a workspace of its own, the size cuBLAS's documentation recommends (sm_90 and later 32 MiB,
     else 4 MiB), after set_stream (which resets it): a product captured into a CUDA graph
     (MPL_CUDA_GRAPHS) allocates nothing, and the products choose their algorithms from the
     same workspace with graphs as without */
  size_t ws = major >= 9 ? (size_t)32 << 20 : (size_t)4 << 20;
  CUDA_CHECK(cudaMalloc(&cd->blas_ws, ws));
  CUBLAS_CHECK(mpl_cublas.set_workspace(cd->blas, cd->blas_ws, ws));
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
  cd->graphs.want = d->graphs;
  CUDA_CHECK(cudaSetDevice(index));
  CUDA_CHECK(cudaFree(NULL)); /* creates the primary context now, not inside the first step */
  if (setup_device(cd, d->tf32, err) != MPL_OK) return MPL_ERR;
  return cudev_load_optim(cd, err);
}

static void cuda_free(MplDevice *d) {
  CudaDev *cd = d->impl;
  if (!cd) return;
  CUDA_SOFT(cudaSetDevice(cd->dev));
  cudev_graph_free(cd);
  if (cd->ready) {
    CUDA_SOFT(cudaStreamSynchronize(cd->compute));
    CUDA_SOFT(cudaStreamSynchronize(cd->comm));
  }
  prof_harvest(cd);
  if (cd->prof.nslots) prof_report(cd);
  if (cd->blas_ready) mpl_cublas.destroy(cd->blas);
  if (cd->blas_ws) CUDA_SOFT(cudaFree(cd->blas_ws)); /* (after the handle that used it) */
  if (cd->mod && cd->drv.unload) cd->drv.unload(cd->mod);
  cudev_free_progs(cd);
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
  if (cudev_graph_flush(cd, err) != MPL_OK) return MPL_ERR;
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
  MplErr ignored;
  if (cudev_graph_flush(cd, &ignored) != MPL_OK) return; /* (the work before it never ran: the run has failed) */
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

void cudev_prof_begin(CudaDev *cd, int slot) {
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

void cudev_prof_end(CudaDev *cd) {
  Prof *p = &cd->prof;
  if (!p->on) return;
  CUDA_SOFT(cudaEventRecord(p->ev[2 * p->n + 1], cd->compute));
  p->n++;
}

/* After the compute stream is idle: the pending launches' times, added per slot (not
 * those of the first step: cuBLAS and the pool warm up in it). A step may sync several
 * times (the host reads a norm, a check, a host-staged collective's data). */
static void prof_harvest(CudaDev *cd) {
  Prof *p = &cd->prof;
  if (!p->on) return;
  bool counted = p->steps > 0;
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
            "from the first launch to the last between the host's waits (the difference: the GPU idle)\n",
            cd->dev, p->steps > 0 ? p->steps - 1 : 0, (long long)calls, total, p->wall_ms);
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

/* The job's CUDA source compiled for this device (mplc's options); *ptx is mpl_malloc'd. */
static int compile_source(CudaDev *cd, const char *src, char **ptx, MplErr *err) {
  char archopt[48];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", cd->arch);
  const char *opts[] = {archopt, "--fmad=false", "-default-device", "--prec-div=true", "--prec-sqrt=true"};
  return cudev_compile(src, "mpl_kernels.cu", "the job's kernels", opts, 5, ptx, NULL, 0, err);
}

static int load_ptx(CudaDev *cd, const char *ptx, MplErr *err) {
  return cudev_load_ptx(cd, &cd->mod, "the job's PTX", ptx, err);
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
    if (r != CUDA_SUCCESS) return cudev_fail(cd, r, k->names[i], __FILE__, __LINE__, err);
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
      return cudev_fail(cd, r, sym, __FILE__, __LINE__, err);
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
  int np = nargs + MPL_KERNEL_SCALARS + 1; /* the buffers, the scalars, n_outer */
  if (np > cd->params_cap) {
    mpl_free(cd->params);
    cd->params = mpl_malloc(sizeof(void *) * (size_t)np);
    cd->params_cap = cd->params ? np : 0;
    if (!cd->params) return mpl_errf(err, "cuda: out of memory");
  }
  for (int i = 0; i < nargs; i++) cd->params[i] = &args[i];
  for (int i = 0; i < MPL_KERNEL_SCALARS; i++) cd->scal[i] = scalars[i];
  cd->scal[MPL_KERNEL_SCALARS] = n_outer;
  for (int i = 0; i <= MPL_KERNEL_SCALARS; i++) cd->params[nargs + i] = &cd->scal[i];
  int64_t threads = n_outer * cd->lanes[kernel]; /* a warp per outer iteration for lane kernels */
  int block = block_for(cd, threads);
  int64_t blocks = (threads + block - 1) / block;
  if (blocks > cd->max_blocks) blocks = cd->max_blocks;
  cudev_prof_begin(cd, PROF__FIXED + kernel);
  int st = cudev_launch(cd, cd->fn[kernel], blocks, block, cd->params, err);
  cudev_prof_end(cd);
  return st;
}

static int cuda_kernel(MplDevice *d, MplKernelFn fn, void **args, const int64_t *scalars, int64_t n_outer,
                       int64_t work, MplErr *err) {
  return mpl_errf(err, "cuda: CPU kernels cannot run on a GPU (internal: use launch)");
}

/* ---- products, accumulation, memory ------------------------------------------------------ */

/* Row-major C = alpha op(A) op(B) + beta C as column-major C^T = op(B)^T op(A)^T. */
static int cuda_gemm(MplDevice *d, const JobStep *s, const void *a, const void *b, float *c, MplErr *err) {
  CudaDev *cd = d->impl;
  int64_t batch = s->batch < 1 ? 1 : s->batch;
  if (s->M == 0 || s->N == 0) return MPL_OK;
  /* cuBLAS's (non-_64) calls take int sizes: a larger one would be cut, and a wrong part of
     the product computed (pass 55); the job's validation allows up to 2^30 each, the
     strides to 2^40 */
  if (s->M > INT32_MAX || s->N > INT32_MAX || s->K > INT32_MAX || batch > INT32_MAX)
    return mpl_errf(err, "cuda: a product of M %lld, N %lld, K %lld, batch %lld: cuBLAS takes sizes below 2^31",
                    (long long)s->M, (long long)s->N, (long long)s->K, (long long)batch);
  int lda = (int)(s->ta ? s->M : s->K), ldb = (int)(s->tb ? s->K : s->N), ldc = (int)s->N;
  if (lda < 1) lda = 1;
  if (ldb < 1) ldb = 1;
  float alpha = (float)s->alpha, beta = (float)s->beta;
  const void *A = a, *B = b; /* the executor applied the batch offsets */
  float *C = c;
  cublasOperation_t opb = s->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = s->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_gemm(cd, ((uint64_t)s->prec << 8) + ((uint64_t)s->in16 << 12) + ((uint64_t)s->ta << 13) +
                               ((uint64_t)s->tb << 14) + ((uint64_t)batch << 16),
                       s->M, s->N, s->K, A, B, C, beta, err) != MPL_OK)
    return MPL_ERR;
  cudev_prof_begin(cd, PROF_GEMM);
  cublasStatus_t st;
  if (s->prec == PREC_F32) { /* the handle's math mode: FP32, or TF32 under mplrun --tf32 */
    st = batch == 1 ? mpl_cublas.sgemm(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B, ldb, A, lda, &beta, C, ldc)
                    : mpl_cublas.sgemm_strided(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B, ldb,
                                                s->stride_b, A, lda, s->stride_a, &beta, C, ldc, s->stride_c, (int)batch);
  } else if (s->in16) { /* bf16 operands stored as bf16 (precision.c's prec_narrow): half the bytes read */
    st = batch == 1 ? mpl_cublas.gemm_ex(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B, CUDA_R_16BF, ldb, A,
                                   CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
                    : mpl_cublas.gemm_strided_ex(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B,
                                                 CUDA_R_16BF, ldb, s->stride_b, A, CUDA_R_16BF, lda, s->stride_a, &beta,
                                                 C, CUDA_R_32F, ldc, s->stride_c, (int)batch, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT);
  } else { /* tf32: TF32 tensor cores; bf16: A and B hold bf16 values, so the down-conversion is exact */
    cublasComputeType_t ct = s->prec == PREC_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F_FAST_TF32;
    st = batch == 1 ? mpl_cublas.gemm_ex(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B, CUDA_R_32F, ldb, A,
                                   CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT)
                    : mpl_cublas.gemm_strided_ex(cd->blas, opb, opa, (int)s->N, (int)s->M, (int)s->K, &alpha, B,
                                                 CUDA_R_32F, ldb, s->stride_b, A, CUDA_R_32F, lda, s->stride_a, &beta, C,
                                                 CUDA_R_32F, ldc, s->stride_c, (int)batch, ct, CUBLAS_GEMM_DEFAULT);
  }
  cudev_prof_end(cd);
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
    if (cudev_graph_op(cd, GOP_ACCUM, (uint64_t)k, 0, err) != MPL_OK) return MPL_ERR;
    cudev_prof_begin(cd, PROF_ACCUM);
    cublasStatus_t st = mpl_cublas.saxpy(cd->blas, (int)k, &one, src + i, 1, acc + i, 1);
    cudev_prof_end(cd);
    CUBLAS_CHECK(st);
  }
  return MPL_OK;
}

static int cuda_zero(MplDevice *d, void *dst, size_t bytes, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!bytes) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_op(cd, GOP_ZERO, bytes, 0, err) != MPL_OK) return MPL_ERR;
  cudev_prof_begin(cd, PROF_COPY);
  cudaError_t st = cudaMemsetAsync(dst, 0, bytes, cd->compute);
  cudev_prof_end(cd);
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
  if (cudev_graph_flush(cd, err) != MPL_OK) return MPL_ERR;
  /* with a stop flag, first the abortable wait: a copy to pageable memory blocks the host
   * until the stream reaches it, which a stuck NCCL operation would make forever */
  if (cd->stop && mpl_cuda_wait(cd->compute, NULL, cd->stop, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDefault, cd->compute));
  CUDA_CHECK(cudaStreamSynchronize(cd->compute));
  cudev_graph_waited(cd);
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
  if (cudev_graph_flush(cd, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyDefault, cd->compute));
  return MPL_OK;
}

static void cuda_step_done(MplDevice *d) {
  CudaDev *cd = d->impl;
  cd->prof.steps++;
  cudev_graph_step_done(cd);
}

static int cuda_sync(MplDevice *d, MplErr *err) {
  CudaDev *cd = d->impl;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_flush(cd, err) != MPL_OK) return MPL_ERR;
  if (mpl_cuda_wait(cd->comm, NULL, cd->stop, err) != MPL_OK || mpl_cuda_wait(cd->compute, NULL, cd->stop, err) != MPL_OK)
    return MPL_ERR;
  CUDA_CHECK(cudaGetLastError());
  cudev_graph_waited(cd);
  prof_harvest(cd);
  return MPL_OK;
}

/* ---- launches and device-to-device copies ------------------------------------------- */

int cudev_launch(CudaDev *cd, CUfunction f, int64_t blocks, int block, void **params, MplErr *err) {
  /* gridDim.x is at most 2^31 - 1 (a count past 2^32 would wrap and run a part, silently) */
  if (blocks > 0x7fffffff)
    return mpl_errf(err, "cuda: a launch of %lld blocks (at most 2^31 - 1): the step's sizes are too large for one grid",
                    (long long)blocks);
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_op(cd, GOP_LAUNCH, (uint64_t)(uintptr_t)f, (uint64_t)blocks + ((uint64_t)block << 40), err) != MPL_OK)
    return MPL_ERR;
  CU_CHECK(cd, cd->drv.launch(f, (unsigned)blocks, 1, 1, (unsigned)block, 1, 1, 0, (CUstream)cd->compute, params, NULL));
  CUDA_CHECK(cudaGetLastError());
  return MPL_OK;
}

static int cuda_copy_device(MplDevice *d, void *dst, const void *src, size_t bytes, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!bytes || dst == src) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_op(cd, GOP_COPY, bytes, 0, err) != MPL_OK) return MPL_ERR;
  cudev_prof_begin(cd, PROF_COPY);
  cudaError_t st = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cd->compute);
  cudev_prof_end(cd);
  CUDA_CHECK(st);
  return MPL_OK;
}

static int cuda_copy_2d(MplDevice *d, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        size_t height, MplErr *err) {
  CudaDev *cd = d->impl;
  if (!width || !height) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_op(cd, GOP_COPY_2D, width + ((uint64_t)height << 32), dpitch + ((uint64_t)spitch << 32), err) != MPL_OK)
    return MPL_ERR;
  cudev_prof_begin(cd, PROF_COPY);
  cudaError_t st = cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, cd->compute);
  cudev_prof_end(cd);
  CUDA_CHECK(st);
  return MPL_OK;
}

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
    .ce_reserve = cuda_ce_reserve,
    .emb_grad = cuda_emb_grad,
    .zero = cuda_zero,
    .copy_to_host = cuda_copy_to_host,
    .copy_from_host = cuda_copy_from_host,
    .device_memory = true,
    .load_kernels = cuda_load_kernels,
    .launch = cuda_launch,
    .sync = cuda_sync,
    .step_done = cuda_step_done,
    .copy_device = cuda_copy_device,
    .copy_2d = cuda_copy_2d,
    .sumsq_f64 = cuda_sumsq_f64,
    .scale_f32 = cuda_scale_f32,
    .sgd = cuda_sgd,
    .adamw = cuda_adamw,
    .sumsq_f64_list = cuda_sumsq_list,
    .scale_f32_list = cuda_scale_list,
    .adamw_list = cuda_adamw_list,
    .sgd_list = cuda_sgd_list,
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
