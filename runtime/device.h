/*
 * device.h — the device backends: one table of function pointers per kind of device
 * (device_cpu.c, device_cuda.c), filled with designated initializers. The executor
 * (exec.c, update.c, setup.c, train.c) reaches a device through its table only; train.c
 * picks the table by name (mpl_device_find).
 *
 * Conventions: pointers into an arena are device pointers; copy_to_host and
 * copy_from_host move bytes across; every operation is queued in order with the rest of
 * the rank's work, and sync waits for it all. Every backend has the optimizer operations,
 * with the bits of optim.c's loops.
 */
#ifndef MPL_DEVICE_H
#define MPL_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
#include "mpl.h"

/* ==== device_cpu.c ==================================================== */

/* A generated kernel: outer iterations [begin, end); scalars = {seed, step, micro-batch over
 * all replicas, tp index}: MPL_KERNEL_SCALARS of them (compiler/kernel.h's KIR_SCALARS). A
 * CUDA kernel takes them as its last parameters but one, n_outer. */
enum { MPL_KERNEL_SCALARS = 4 };
typedef void (*MplKernelFn)(void **args, const int64_t *scalars, int64_t begin, int64_t end);

typedef struct MplDevice MplDevice;

/* One step of the fused attention (issue 14; JS_SDPA, JS_SDPA_BWD): row-major f32 tensors
 * q [B, H, T, hs], k [B, Hkv, S, hs], v [B, Hkv, S, hv], out [B, H, T, hv], lse [B, H, T];
 * query head h uses kv head h / (H / Hkv); causal: query i sees keys j <= i. The forward
 * writes out and lse; the backward reads them with dout and writes dq, dk, dv. bf16: the
 * probabilities (and the backward's dS) are rounded to bf16 before their products. */
typedef struct MplSdpa {
  int64_t B, H, Hkv, T, S, hs, hv;
  float scale;
  bool causal, bf16;
  bool tf32; /* a tf32 step (JobStep.prec): a GPU may round the products' operands to tf32 */
  /* in16 (JobStep.in16): the inputs are stored as bf16 and read through q16 ... dout16
     (out16: the backward's out); else through q ... dout, out */
  bool in16;
  const float *q, *k, *v, *dout;
  const uint16_t *q16, *k16, *v16, *out16, *dout16;
  float *out, *lse, *dq, *dk, *dv;
} MplSdpa;

/* One step of the fused cross-entropy (issue 14 item 3; JS_CE): row-major x [N, K] f32, w
 * [V, K] when tb else [K, V], targets i32 [N] in [0, V), rows in blocks of `chunk`. Writes
 * loss (f32 [1], the mean over rows of lse - the target's logit) and the loss's gradient for
 * dloss = 1: dx [N, K] and dw (w's shape). bf16: x and w hold bf16 values; each block's
 * logits and g are rounded to bf16. */
typedef struct MplCe {
  int64_t N, K, V, chunk;
  bool tb, bf16;
  /* in16 (JobStep.in16): x and w are stored as bf16, read through x16 and w16 (and each block
     of g is kept as bf16 too, for its products); else through x and w */
  bool in16;
  const float *x, *w;
  const uint16_t *x16, *w16;
  const int32_t *targets;
  float *loss, *dx, *dw;
} MplCe;

/* An embedding's gradient (JS_EMB_GRAD, job.h): idx i32 [M], dy f32 [M, N], out f32 [K, N];
 * out[r, :] = the sum of dy[p, :] over the positions p whose idx is r, in position order
 * from 0; a position whose idx is outside [0, K) adds nothing (sema makes such an idx an
 * error before it gets here). Every device gives the same bits (the same additions in the
 * same order). */
typedef struct MplEmbGrad {
  int64_t M, N, K;
  const int32_t *idx;
  const float *dy;
  float *out;
} MplEmbGrad;

/* A device backend: one instance per kind (cpu, cuda), filled with designated initializers.
 * Pointers into the arena are device pointers; copy_* move bytes to and from host memory. */
/* One tensor of a multi-tensor optimizer op (device pointers): sumsq_f64_list reads g and
 * writes *out; scale_f32_list scales g; adamw_list updates p, m, v from g with its own
 * weight_decay; sgd_list updates p and the momentum buffer m (NULL: none) from g. */
enum { MPL_OPT_LIST = 32 }; /* tensors per call, at most */
typedef struct MplOptTensor {
  float *p, *g, *m, *v;
  double *out;
  int64_t n;
  double weight_decay;
} MplOptTensor;

typedef struct MplDeviceOps {
  const char *name;
  /* index: the device number; threads: CPU threads for its kernels and products. */
  int (*init)(MplDevice *d, int index, int threads, MplErr *err);
  void (*free)(MplDevice *d);
  /* Called on the rank's own thread before its first step (per-thread settings). */
  void (*bind_thread)(MplDevice *d);
  int (*arena_alloc)(MplDevice *d, uint64_t bytes, void **base, MplErr *err);
  bool arena_zeroed;   /* arena_alloc's memory is zero already (cpu: a fresh mapping, whose pages
                          come in zeroed where the rank first touches them), so no zero op follows */
  void (*arena_free)(MplDevice *d, void *base);
  int (*kernel)(MplDevice *d, MplKernelFn fn, void **args, const int64_t *scalars,
                int64_t n_outer, int64_t work, MplErr *err);
  /* a and b: f32, or bf16 (uint16_t) where s->in16 */
  int (*gemm)(MplDevice *d, const JobStep *s, const void *a, const void *b, float *c, MplErr *err);
  int (*accum_f32)(MplDevice *d, float *acc, const float *src, int64_t n, MplErr *err);
  /* the fused attention, forward and backward (MplSdpa); NULL: the device has none */
  int (*sdpa)(MplDevice *d, const MplSdpa *a, MplErr *err);
  int (*sdpa_bwd)(MplDevice *d, const MplSdpa *a, MplErr *err);
  /* the fused cross-entropy (MplCe); NULL: the device has none */
  int (*ce)(MplDevice *d, const MplCe *a, MplErr *err);
  /* optional: ce's scratch for a, taken before training (the cpu: through its memory check) */
  int (*ce_reserve)(MplDevice *d, const MplCe *a, MplErr *err);
  /* an embedding's gradient (MplEmbGrad) */
  int (*emb_grad)(MplDevice *d, const MplEmbGrad *a, MplErr *err);
  int (*zero)(MplDevice *d, void *dst, size_t bytes, MplErr *err);
  int (*copy_to_host)(MplDevice *d, void *host, const void *dev, size_t bytes, MplErr *err);
  int (*copy_from_host)(MplDevice *d, void *dev, const void *host, size_t bytes, MplErr *err);
  /* ---- devices whose memory the host cannot touch (cuda); NULL / false for cpu ---- */
  bool device_memory;  /* arena pointers are not host pointers: the executor stages through host */
  /* Loads the job's GPU kernels (PTX) for this device; then launch runs kernel `kernel`. */
  int (*load_kernels)(MplDevice *d, const JobKernels *k, MplErr *err);
  int (*launch)(MplDevice *d, int kernel, void **args, int nargs, const int64_t *scalars,
                int64_t n_outer, MplErr *err);
  /* Waits until everything queued on the device is done (the end of a rank's step, and
     wherever the host must read what the device wrote). */
  int (*sync)(MplDevice *d, MplErr *err);
  /* Told after the sync that ends each of the rank's steps (MPL_PROFILE counts steps by it);
     NULL: nothing to do. */
  void (*step_done)(MplDevice *d);
  /* ---- copies within the arena's memory (every backend: tp's collectives use them) ---- */
  int (*copy_device)(MplDevice *d, void *dst, const void *src, size_t bytes, MplErr *err);
  /* height rows of width bytes, row i from src + i*spitch to dst + i*dpitch (tp's parts) */
  int (*copy_2d)(MplDevice *d, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                 MplErr *err);
  /* ---- the device's own communicator (comm_nccl.c for cuda), or all NULL: the host's
   * (comm_local.c, comm_mpi.c). world_*: the ranks are threads of this process, each on
   * its device; mpi_init: this process's rank over an MPI communicator. */
  int (*world_init)(void **world, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err);
  MplComm *(*world_rank)(void *world, int r);
  void (*world_abort)(void *world, const char *why);
  void (*world_free)(void *world);
  int (*mpi_init)(MplComm **out, MplComm *mpi, MplDevice *dev, const MplCommMesh *mesh, MplErr *err);
  /* The number of such devices here (>= 1), or MPL_ERR saying why there is none; NULL: the
   * host itself (cpu). */
  int (*count)(int *count, MplErr *err);
  /* ---- the optimizer on the device (every backend has them: the update phase runs on
   * them, runtime/update.c). Pointers are device pointers; every op is queued in order
   * with the rest of the rank's work. */
  /* *out (device memory) = the sum of g[i]^2 in float64, in an order fixed by n alone */
  int (*sumsq_f64)(MplDevice *d, const float *g, int64_t n, double *out, MplErr *err);
  int (*scale_f32)(MplDevice *d, float *g, int64_t n, float coef, MplErr *err);
  /* mpl_sgd_update and mpl_adamw_update (same arguments, same bits per element) */
  int (*sgd)(MplDevice *d, float *p, const float *g, float *buf, int64_t n, double lr, double momentum,
             bool first_step, MplErr *err);
  int (*adamw)(MplDevice *d, float *p, const float *g, float *m, float *v, int64_t n, double lr, double beta1,
               double beta2, double eps, double weight_decay, int64_t t, MplErr *err);
  /* Multi-tensor forms (optional; NULL: update.c calls the ops above one tensor at a time):
   * the op over k (1 .. MPL_OPT_LIST) tensors at once (on a GPU, one or two launches
   * instead of k or 2k), each tensor's result the same bits as the op above gives it. */
  int (*sumsq_f64_list)(MplDevice *d, const MplOptTensor *t, int k, MplErr *err);
  int (*scale_f32_list)(MplDevice *d, const MplOptTensor *t, int k, float coef, MplErr *err);
  int (*adamw_list)(MplDevice *d, const MplOptTensor *t, int k, double lr, double beta1, double beta2, double eps,
                    int64_t step, MplErr *err);
  int (*sgd_list)(MplDevice *d, const MplOptTensor *t, int k, double lr, double momentum, bool first_step, MplErr *err);
} MplDeviceOps;

struct MplDevice {
  const MplDeviceOps *ops;
  int index, threads;
  bool tf32;           /* cuda: f32 products (JobStep.prec PREC_F32) may use TF32 tensor cores too, as
                          the tf32 and bf16 steps do their precision's (set before init) */
  bool graphs;         /* cuda: may queue its work as CUDA graphs once the first pass is over
                          (MPL_CUDA_GRAPHS=1; set before init) */
  void *impl;
};

extern const MplDeviceOps mpl_device_cpu_ops;

/* ==== device_cuda.c =================================================== */

/* Built without CUDA, its init fails with "built without CUDA". */
extern const MplDeviceOps mpl_device_cuda_ops;
/* The CUDA C of the optimizer kernels (SGD, AdamW, sums of squares, scaling) that every
 * cuda device compiles with NVRTC at init. */
extern const char mpl_cuda_optim_src[];
/* Compiles mpl_cuda_optim_src for arch ("compute_90", "sm_90") with the options init uses
 * (--fmad=false, IEEE division and square root) into PTX (*ptx mpl_malloc'd, NUL ended);
 * log gets NVRTC's log, empty when there was nothing to say. Without CUDA: MPL_ERR. */
int mpl_cuda_optim_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err);
/* The fused attention's kernels (runtime/cuda/sdpa.cu) for head sizes hs (q, k) and hv (v),
 * each 1 .. MPL_SDPA_MAX_HEAD, and inputs stored as bf16 (in16) or f32, compiled with NVRTC
 * for arch; the same contract. mplc fuses an sdpa only within that bound (MPL_SDPA_MAX_HEAD,
 * job.h; sema_lower.c). */
int mpl_cuda_sdpa_compile(const char *arch, int hs, int hv, bool in16, char **ptx, char *log, size_t logn,
                          MplErr *err);
/* The fused cross-entropy's row kernels (runtime/cuda/ce.cu) through NVRTC for arch. */
int mpl_cuda_ce_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err);
/* The embedding gradient's kernel (runtime/cuda/embed.cu) through NVRTC for arch. */
int mpl_cuda_emb_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err);
/* The number of visible CUDA devices (>= 1), or MPL_ERR with a message that says why
 * there is none: built without CUDA, no driver, no device. Never crashes. */
int mpl_cuda_device_count(int *count, MplErr *err);


/* ==== sdpa_cpu.c: the fused attention on the CPU ============================ */

/* The instruction sets it has code for, best first; mpl_sdpa_cpu_isa picks the best this
 * CPU has (MPL_CPU_SDPA=avx512|avx2|generic asks for one, if the CPU has it). Every one
 * gives the same bits. */
typedef enum MplSdpaIsa { MPL_SDPA_AVX512, MPL_SDPA_AVX2, MPL_SDPA_GENERIC } MplSdpaIsa;
MplSdpaIsa mpl_sdpa_cpu_isa(void);
const char *mpl_sdpa_isa_name(MplSdpaIsa isa);
/* MPL_CPU_SDPA checked (mplrun's start): MPL_OK when unset or empty, or naming an instruction
 * set this CPU has; a name this CPU lacks is MPL_OK with *lacks set (mpl_sdpa_cpu_isa then
 * takes the best it has); any other value is an error naming it. */
int mpl_sdpa_isa_env(bool *lacks, MplErr *err);
/* The work as independent units for a device's threads: the forward's are (batch, head,
 * tile of query rows), the backward's (batch, kv head). mpl_sdpa_cpu_fwd and _bwd run
 * units [begin, end) as an MplKernelFn: args[0] is an MplSdpaRun. Any split of the units
 * gives the same bits. */
typedef struct MplSdpaRun {
  MplSdpa a;
  MplSdpaIsa isa;
  _Atomic int failed; /* a unit could not allocate its scratch */
} MplSdpaRun;
/* MPL_CPU_PROFILE: the first step is over; the profile counts the steps after it apart
 * (the first pays each arena page's first touch, charged to whichever kernel makes it). */
void mpl_cpu_profile_warm(void);

int64_t mpl_sdpa_cpu_units(const MplSdpa *a, bool backward);
void mpl_sdpa_cpu_fwd(void **args, const int64_t *scalars, int64_t begin, int64_t end);
void mpl_sdpa_cpu_bwd(void **args, const int64_t *scalars, int64_t begin, int64_t end);

/* ==== ce_cpu.c: the fused cross-entropy on the CPU ========================== */

/* Runs fn's units [0, n) (args as given) over the caller's threads, any split. */
typedef int (*MplCeRowsFn)(void *ctx, MplKernelFn fn, void **args, int64_t n, MplErr *err);
/* The floats of scratch mpl_ce_cpu needs (8-byte aligned): chunk x V + 2N. */
int64_t mpl_ce_cpu_scratch(const MplCe *a);
/* The step, its GEMMs through gemm.c (bf16: through bf16 when not NULL), its row loops
 * through rows(ctx, ...). The same bits for any thread count. */
int mpl_ce_cpu(const MplCe *a, float *scratch, MplGemmBf16 *bf16, MplCeRowsFn rows, void *ctx, MplErr *err);

/* The job's CPU kernels, compiled for the host by the JIT (jit_cpu.c). */
typedef struct MplCpuKernels {
  int n;
  MplKernelFn *fn;
  void *jit; /* the JIT that owns the code */
} MplCpuKernels;
int mpl_cpu_kernels_load(MplCpuKernels *k, const JobKernels *jk, MplErr *err);
void mpl_cpu_kernels_free(MplCpuKernels *k);

/* The backend of a kind ("cpu", "cuda"), or NULL. */
const MplDeviceOps *mpl_device_find(const char *kind);

#endif
