/*
 * cuda_dev.h — private to the cuda device (device_cuda.c: set-up, memory, the job's
 * kernels, products, profiling; device_cuda_progs.c: NVRTC, modules, and the runtime's own
 * CUDA programs: the optimizer, the fused attention, the fused cross-entropy): the device's
 * state and the few functions the two files share. Included only when MPL_HAVE_CUDA is
 * defined, after cuda_rt.h.
 *
 * Invariants: as device_cuda.c's header says (every call checked, everything on the
 * compute stream in program order, each entry point makes its device current first).
 */
#ifndef MPL_CUDA_DEV_H
#define MPL_CUDA_DEV_H

#include <cublas_v2.h>
#include <cuda.h>
#include "cuda_dl.h"

#include "cuda_rt.h"

/* The cuBLAS functions the device calls, from libcublas opened at the first device's set-up
 * (cublas_dl.c says why it is not linked). */
typedef struct MplCublas {
  cublasStatus_t (*create)(cublasHandle_t *);
  cublasStatus_t (*destroy)(cublasHandle_t);
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
  cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t);
  const char *(*status_string)(cublasStatus_t);
  cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const float *,
                          const float *, int, const float *, int, const float *, float *, int);
  cublasStatus_t (*sgemm_strided)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const float *,
                                  const float *, int, long long, const float *, int, long long, const float *, float *,
                                  int, long long, int);
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                            const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  cublasStatus_t (*gemm_strided_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                                    const void *, cudaDataType, int, long long, const void *, cudaDataType, int,
                                    long long, const void *, void *, cudaDataType, int, long long, int,
                                    cublasComputeType_t, cublasGemmAlgo_t);
  cublasStatus_t (*saxpy)(cublasHandle_t, int, const float *, const float *, int, float *, int);
  cublasStatus_t (*set_workspace)(cublasHandle_t, void *, size_t);
} MplCublas;
extern MplCublas mpl_cublas;
/* Opens libcublas and fills mpl_cublas (once per process; thread-safe); an error names the
 * library and why. */
int mpl_cublas_load(MplErr *err);
/* cublasGetStatusString's text for s ("cuBLAS not loaded" before a load). */
const char *mpl_cublas_status(cublasStatus_t s);

#define CUBLAS_CHECK(call)                                                                              \
  do {                                                                                                  \
    cublasStatus_t s_ = (call);                                                                         \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      return mpl_errf(err, "cuBLAS: %s: %s (%s:%d)", #call, mpl_cublas_status(s_), __FILE__, __LINE__); \
  } while (0)

#define CU_CHECK(cd, call)                                                                       \
  do {                                                                                           \
    CUresult r_ = (call);                                                                        \
    if (r_ != CUDA_SUCCESS) return cudev_fail(cd, r_, #call, __FILE__, __LINE__, err);             \
  } while (0)

#define NVRTC_CHECK(call)                                                                          \
  do {                                                                                             \
    nvrtcResult n_ = (call);                                                                       \
    if (n_ != NVRTC_SUCCESS) return cudev_nvrtc_fail(prog, n_, #call, err);                              \
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
enum { PROF_GEMM, PROF_OPTIM, PROF_ACCUM, PROF_COPY, PROF_SDPA, PROF_SDPA_BWD, PROF_CE, PROF_EMB, PROF__FIXED };
typedef struct Prof {
  bool on;
  int nslots;                 /* PROF__FIXED + kernels */
  char **names;               /* [nslots] */
  double *ms;                 /* [nslots] */
  int64_t *calls;             /* [nslots] */
  cudaEvent_t *ev;            /* [2 * cap]: start, end of each pending launch */
  int *slot;                  /* [cap] */
  int n, cap;
  int steps;                  /* steps done (step_done): launches harvested before the first
                                 step ends (the warm-up step) are not counted */
  double wall_ms;             /* GPU time from the first launch to the last between host waits */
} Prof;

/* MPL_CUDA_GRAPHS=1 (device_cuda_graph.c): the runs of work between the host's waits, captured
 * from the compute stream and launched as CUDA graphs, each kept by its signature. */
enum { GRAPH_CACHE = 1024 }; /* (one per run between the host's waits: a tp step has hundreds) */
typedef struct CudaGraph {
  uint64_t sig;               /* the operations' kinds and shapes, hashed (not their pointers or scalars) */
  int nops;
  cudaGraphExec_t exec;       /* NULL: a free slot */
  uint64_t used;              /* the tick of its last launch (the least recent is replaced) */
} CudaGraph;
typedef struct CudaGraphs {
  bool want;                  /* MplDevice.graphs: from the end of the first step */
  bool on;                    /* capturing from the next operation (the first step is over) */
  bool capturing;             /* a capture is open on the compute stream */
  uint64_t sig;               /* of the open capture so far */
  int nops;
  CudaGraph cache[GRAPH_CACHE];
  uint64_t tick;              /* graph launches so far */
  uint64_t waited;            /* the tick when the host last waited for the compute stream */
  int64_t launches, instantiated, updated, ops; /* for the report at the device's end */
} CudaGraphs;

typedef struct CudaDev {
  int dev;
  bool ready;                 /* streams and handle exist */
  cudaStream_t compute, comm;
  cublasHandle_t blas;
  bool blas_ready;
  void *blas_ws;              /* cuBLAS's workspace (cublasSetWorkspace): the same from the start, graphs or not */
  CuDriver drv;
  CUmodule mod;
  CUfunction *fn;             /* [nfn] */
  int *lanes;                 /* [nfn] threads per outer iteration: NAME_lanes (a warp), else 1 */
  int nfn;
  void **params;              /* kernel parameter scratch */
  int params_cap;
  long long scal[MPL_KERNEL_SCALARS + 1]; /* seed, step, mb, tpi, n_outer of the launch being built */
  int max_blocks, sms;
  char arch[16];              /* "compute_90" */
  /* the optimizer kernels (mpl_cuda_optim_src) */
  CUmodule omod;
  CUfunction f_sgd, f_adamw, f_sumsq, f_sumsq_final, f_scale;
  CUfunction f_adamw_list, f_scale_list, f_sumsq_list, f_sumsq_final_list, f_sgd_list; /* multi-tensor forms */
  double *partial;            /* [MPL_OPT_LIST * SUMSQ_PARTS] partial sums of squares */
  /* the fused attention's kernels, one module per pair of head sizes met (8 at most) */
  struct CudaSdpa {
    int hs, hv;
    bool in16; /* compiled with MPL_SDPA_IN16: bf16 inputs */
    CUmodule mod;
    CUfunction fwd, bwd_q, bwd_kv;
    CUfunction fwd_tc, bwd_q_tc, bwd_kv_tc; /* on tensor cores (bf16 inputs), or NULL */
    CUfunction bwd_dk_tc, bwd_dv_tc;        /* bwd_kv_tc's work in two kernels (head sizes past 64), or NULL */
    CUfunction fwd_x3, bwd_q_x3, bwd_dk_x3, bwd_dv_x3; /* f32 inputs as three tf32 products each, or NULL */
  } sdpa[8];
  int nsdpa;
  /* the fused cross-entropy's kernels (loaded on first use) and scratch (grown, kept) */
  CUmodule cemod;
  CUfunction ce_rows, ce_finish;
  float *ce_scratch;
  int64_t ce_cap;             /* floats */
  /* an embedding's gradient (runtime/cuda/embed.cu, loaded on first use) */
  CUmodule embmod;
  CUfunction emb_grad;
  const atomic_int *stop;     /* set by an NCCL communicator: waits poll it (mpl_cuda_wait) */
  Prof prof;                  /* MPL_PROFILE=1: GPU time per kernel */
  CudaGraphs graphs;          /* MPL_CUDA_GRAPHS=1 */
} CudaDev;

/* ---- device_cuda.c --------------------------------------------------------------------- */

/* err from a driver API result, with its message (always MPL_ERR). */
int cudev_fail(CudaDev *cd, CUresult r, const char *what, const char *file, int line, MplErr *err);
/* MPL_PROFILE: brackets one launch on the compute stream, its time added to `slot`. */
void cudev_prof_begin(CudaDev *cd, int slot);
void cudev_prof_end(CudaDev *cd);
/* Queues f on the compute stream; the launch's result and then the last error checked. */
int cudev_launch(CudaDev *cd, CUfunction f, int64_t blocks, int block, void **params, MplErr *err);

/* ---- device_cuda_graph.c: MPL_CUDA_GRAPHS ------------------------------------------------ */

/* The kinds of operation a graph's signature tells apart (cudev_graph_op's a). */
enum { GOP_ACCUM = 2, GOP_ZERO, GOP_LAUNCH, GOP_COPY, GOP_COPY_2D, GOP_GEMM };
/* Before an operation is queued on the compute stream: with graphs on, opens a capture if
 * none is (the operation is then captured, not run) and adds (a, b, c), the operation's kind
 * and shape, to its signature. Without graphs: nothing. */
int cudev_graph_op(CudaDev *cd, uint64_t a, uint64_t b, uint64_t c, MplErr *err);
/* cudev_graph_op of a cuBLAS product: its sizes, its operands' alignment and whether beta is 0
 * (what cuBLAS picks its kernels by) beside `how` (the caller's types and transposes). */
int cudev_graph_gemm(CudaDev *cd, uint64_t how, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
                     const void *C, float beta, MplErr *err);
/* Before the host waits for the compute stream, copies to or from the host, allocates or
 * frees device memory or loads a module: the open capture (if any) ends and is launched as
 * one graph, the cached one of its signature updated with its parameters, or a new one. */
int cudev_graph_flush(CudaDev *cd, MplErr *err);
/* After the host waited for the compute stream to be idle: every graph launched has ended. */
void cudev_graph_waited(CudaDev *cd);
/* After the sync that ends a pass (a step, a sampling pass): graphs from the next operation on,
 * where the device was asked for them (MplDevice.graphs) and MPL_PROFILE is off (a warning
 * says why not, else). */
void cudev_graph_step_done(CudaDev *cd);
/* At the device's end (its streams not yet waited for): an open capture dropped (its work
 * never ran: the run failed), the graphs freed; one line to stderr saying how many
 * operations ran in how many graph launches. */
void cudev_graph_free(CudaDev *cd);
/* An open capture ended and its graph destroyed, its work never run (a failed run's end). */
void cudev_graph_drop(CudaDev *cd);

/* ---- device_cuda_progs.c ----------------------------------------------------------------- */

/* err from an NVRTC result, with the program's log; destroys prog (always MPL_ERR). */
int cudev_nvrtc_fail(nvrtcProgram prog, nvrtcResult r, const char *what, MplErr *err);
/* src (named `file`) compiled with opts into *ptx (mpl_malloc'd, NUL ended); NVRTC's log in
 * log[0 .. logn) when logn > 0; `what` names the program in an error. */
int cudev_compile(const char *src, const char *file, const char *what, const char *const *opts, int nopts,
                  char **ptx, char *log, size_t logn, MplErr *err);
/* cuModuleLoadDataEx of ptx into *mod, the JIT's error log in the message. */
int cudev_load_ptx(CudaDev *cd, CUmodule *mod, const char *what, const char *ptx, MplErr *err);
/* At init: the optimizer kernels and their partial-sums buffer. */
int cudev_load_optim(CudaDev *cd, MplErr *err);
/* At free: the runtime's programs' modules and buffers (the device current, streams idle). */
void cudev_free_progs(CudaDev *cd);
/* The MplDeviceOps entries the runtime's programs serve. */
int cuda_sumsq_f64(MplDevice *d, const float *g, int64_t n, double *out, MplErr *err);
int cuda_scale_f32(MplDevice *d, float *g, int64_t n, float coef, MplErr *err);
int cuda_sgd(MplDevice *d, float *p, const float *g, float *buf, int64_t n, double lr, double momentum,
             bool first_step, MplErr *err);
int cuda_adamw(MplDevice *d, float *p, const float *g, float *m, float *v, int64_t n, double lr, double beta1,
               double beta2, double eps, double weight_decay, int64_t t, MplErr *err);
int cuda_sumsq_list(MplDevice *d, const MplOptTensor *t, int k, MplErr *err);
int cuda_scale_list(MplDevice *d, const MplOptTensor *t, int k, float coef, MplErr *err);
int cuda_adamw_list(MplDevice *d, const MplOptTensor *t, int k, double lr, double beta1, double beta2, double eps,
                    int64_t step, MplErr *err);
int cuda_sgd_list(MplDevice *d, const MplOptTensor *t, int k, double lr, double momentum, bool first_step,
                  MplErr *err);
int cuda_sdpa(MplDevice *d, const MplSdpa *a, MplErr *err);
int cuda_sdpa_bwd(MplDevice *d, const MplSdpa *a, MplErr *err);
int cuda_ce(MplDevice *d, const MplCe *a, MplErr *err);
int cuda_ce_reserve(MplDevice *d, const MplCe *a, MplErr *err);
int cuda_emb_grad(MplDevice *d, const MplEmbGrad *a, MplErr *err);

#endif
