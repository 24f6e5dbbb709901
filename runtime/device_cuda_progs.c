/*
 * device_cuda_progs.c — CUDA C programs on a cuda device: compiling them with NVRTC,
 * loading their modules, and the runtime's own programs with their launches: the optimizer
 * (runtime/cuda/optim.cu, at init), the fused attention (runtime/cuda/sdpa.cu, a module per
 * pair of head sizes, on first use) and the fused cross-entropy (runtime/cuda/ce.cu, on first
 * use, its products by cuBLAS) and an embedding's gradient (runtime/cuda/embed.cu, on first
 * use). Their sources are embedded at build time (tools/embed.sh).
 * The job's own kernels are device_cuda.c's, which compiles them through cudev_compile too.
 *
 * Invariants: a program is compiled once per process for the same options and source
 * (cudev_compile keeps the PTX: the ranks share it), with the options its source's header
 * names (the optimizer's without FMA and with IEEE division and square root, so an update
 * is optim.c's bits); every launch is profiled under its slot and goes on the compute stream; a module
 * that fails to load or lacks a function is unloaded and reported, never half kept.
 */
#include "exec.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

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

/* An embedding's gradient: runtime/cuda/embed.cu, embedded the same way, compiled with NVRTC
 * the first time a device runs a JS_EMB_GRAD step (mpl_cuda_emb_compile). */
const char mpl_cuda_emb_src[] = {
#include "runtime/cuda/embed.cu.inc"
};

#ifdef MPL_HAVE_CUDA

#include "cuda_dev.h"

/* ---- NVRTC and modules ------------------------------------------------------------------ */

int cudev_nvrtc_fail(nvrtcProgram prog, nvrtcResult r, const char *what, MplErr *err) {
  char log[400] = "";
  size_t n = 0;
  if (prog && mpl_nvrtc.log_size(prog, &n) == NVRTC_SUCCESS && n > 1) {
    char *full = mpl_malloc(n);
    if (full && mpl_nvrtc.log(prog, full) == NVRTC_SUCCESS) snprintf(log, sizeof log, "%s", full);
    mpl_free(full);
  }
  if (prog) mpl_nvrtc.destroy(&prog);
  return mpl_errf(err, "NVRTC: %s: %s%s%s", what, mpl_nvrtc.error_string(r), log[0] ? "\n" : "", log);
}

/* The PTX of a compiled program (*ptx mpl_malloc'd, NUL ended); destroys prog. */
static int take_ptx(nvrtcProgram prog, char **ptx, MplErr *err) {
  size_t n = 0;
  NVRTC_CHECK(mpl_nvrtc.ptx_size(prog, &n));
  *ptx = mpl_malloc(n + 1);
  if (!*ptx) {
    mpl_nvrtc.destroy(&prog);
    return mpl_errf(err, "cuda: out of memory");
  }
  (*ptx)[n] = 0;
  nvrtcResult r = mpl_nvrtc.ptx(prog, *ptx);
  mpl_nvrtc.destroy(&prog);
  if (r != NVRTC_SUCCESS) {
    mpl_free(*ptx);
    *ptx = NULL;
    return mpl_errf(err, "NVRTC: nvrtcGetPTX: %s", mpl_nvrtc.error_string(r));
  }
  return MPL_OK;
}

/* NVRTC's PTX, kept for the process (and on disk, in the compile cache: a run started
 * again does not compile it again): a program compiled once with the same options serves
 * every later request (the ranks of a run each compile the optimizer at init, the fused
 * attention per head sizes, ...: with 8 GPUs, 8 compilations of the same text). The key is
 * the options and the source, compared whole. The lock is held through a compilation, so
 * ranks asking at once wait for the first one's PTX instead of compiling it again. */
typedef struct PtxCached {
  char *key, *ptx, *log;
  struct PtxCached *next;
} PtxCached;
static pthread_mutex_t ptx_lock = PTHREAD_MUTEX_INITIALIZER;
static PtxCached *ptx_cache;

static char *ptx_key(const char *src, const char *const *opts, int nopts) {
  size_t n = strlen(src) + 2;
  for (int i = 0; i < nopts; i++) n += strlen(opts[i]) + 1;
  char *k = mpl_malloc(n), *at = k;
  if (!k) return NULL;
  for (int i = 0; i < nopts; i++) at += sprintf(at, "%s\n", opts[i]);
  sprintf(at, "\n%s", src);
  return k;
}

static char *copy_text(const char *s) {
  size_t n = strlen(s) + 1;
  char *c = mpl_malloc(n);
  if (c) memcpy(c, s, n);
  return c;
}

static int nvrtc_compile(const char *src, const char *file, const char *what, const char *const *opts, int nopts,
                         char **ptx, char *log, size_t logn, MplErr *err) {
  char why[700];
  if (mpl_nvrtc_load(why, sizeof why)) return mpl_errf(err, "%s", why);
  nvrtcProgram prog = NULL;
  NVRTC_CHECK(mpl_nvrtc.create(&prog, src, file, 0, NULL, NULL));
  nvrtcResult r = mpl_nvrtc.compile(prog, nopts, opts);
  size_t n = 0;
  if (logn && mpl_nvrtc.log_size(prog, &n) == NVRTC_SUCCESS && n > 1) {
    char *full = mpl_malloc(n);
    if (full && mpl_nvrtc.log(prog, full) == NVRTC_SUCCESS) snprintf(log, logn, "%s", full);
    mpl_free(full);
  }
  if (r != NVRTC_SUCCESS) {
    char w[160];
    snprintf(w, sizeof w, "nvrtcCompileProgram (%s)", what);
    return cudev_nvrtc_fail(prog, r, w, err);
  }
  return take_ptx(prog, ptx, err);
}

int cudev_compile(const char *src, const char *file, const char *what, const char *const *opts, int nopts,
                  char **ptx, char *log, size_t logn, MplErr *err) {
  *ptx = NULL;
  if (logn) log[0] = 0;
  char *key = ptx_key(src, opts, nopts);
  if (!key) return mpl_errf(err, "out of memory compiling %s", what);
  pthread_mutex_lock(&ptx_lock);
  for (PtxCached *c = ptx_cache; c; c = c->next)
    if (!strcmp(c->key, key)) {
      pthread_mutex_unlock(&ptx_lock);
      mpl_free(key);
      if (logn) snprintf(log, logn, "%s", c->log);
      return (*ptx = copy_text(c->ptx)) ? MPL_OK : mpl_errf(err, "out of memory compiling %s", what);
    }
  char full_log[4096] = "";
  uint8_t *entry = NULL;
  const char *clog, *cptx;
  int st;
  char why[700]; /* (NVRTC that cannot be loaded: nvrtc_compile says so) */
  int lock = -1;  /* (the processes of an mpirun: one compiles, the others take its entry) */
  if (!mpl_nvrtc_load(why, sizeof why) && mpl_nvrtc_cache_get(src, file, opts, nopts, &entry, &clog, &cptx, &lock)) {
    snprintf(full_log, sizeof full_log, "%s", clog); /* compiled before, by this process or another */
    *ptx = copy_text(cptx);
    st = *ptx ? MPL_OK : mpl_errf(err, "out of memory compiling %s", what);
    mpl_free(entry);
  } else {
    st = nvrtc_compile(src, file, what, opts, nopts, ptx, full_log, sizeof full_log, err);
    if (st == MPL_OK) mpl_nvrtc_cache_put(src, file, opts, nopts, full_log, *ptx);
  }
  mpl_kcache_unlock(lock);
  PtxCached *c = st == MPL_OK ? mpl_malloc(sizeof *c) : NULL;
  if (c && (c->ptx = copy_text(*ptx)) && (c->log = copy_text(full_log))) {
    c->key = key, key = NULL;
    c->next = ptx_cache, ptx_cache = c;
  } else if (c) {
    mpl_free(c->ptx), mpl_free(c);
  }
  pthread_mutex_unlock(&ptx_lock);
  mpl_free(key);
  if (logn) snprintf(log, logn, "%s", full_log);
  return st;
}

int cudev_load_ptx(CudaDev *cd, CUmodule *mod, const char *what, const char *ptx, MplErr *err) {
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

/* ptx (freed here) loaded into *mod on this device, with its functions names[i] into *fns[i];
 * on failure *mod is unloaded and NULL. */
static int load_program(CudaDev *cd, char *ptx, CUmodule *mod, const char *what, const char *const *names,
                        CUfunction *const *fns, int n, MplErr *err) {
  cudaError_t e = cudaSetDevice(cd->dev);
  if (e != cudaSuccess) {
    cudaGetLastError();
    mpl_free(ptx);
    return mpl_errf(err, "cuda: cudaSetDevice: %s", cudaGetErrorString(e));
  }
  if (cudev_graph_flush(cd, err) != MPL_OK) { /* (a module's first use, e.g. in a validation pass) */
    mpl_free(ptx);
    return MPL_ERR;
  }
  int st = cudev_load_ptx(cd, mod, what, ptx, err);
  mpl_free(ptx);
  if (st != MPL_OK) return MPL_ERR;
  for (int i = 0; i < n; i++) {
    CUresult r = cd->drv.get_function(fns[i], *mod, names[i]);
    if (r != CUDA_SUCCESS) {
      cudev_fail(cd, r, names[i], __FILE__, __LINE__, err);
      cd->drv.unload(*mod);
      *mod = NULL;
      return MPL_ERR;
    }
  }
  return MPL_OK;
}

void cudev_free_progs(CudaDev *cd) {
  if (cd->partial) CUDA_SOFT(cudaFree(cd->partial));
  if (cd->ce_scratch) CUDA_SOFT(cudaFree(cd->ce_scratch));
  if (!cd->drv.unload) return;
  if (cd->omod) cd->drv.unload(cd->omod);
  for (int i = 0; i < cd->nsdpa; i++)
    if (cd->sdpa[i].mod) cd->drv.unload(cd->sdpa[i].mod);
  if (cd->cemod) cd->drv.unload(cd->cemod);
  if (cd->embmod) cd->drv.unload(cd->embmod);
}

/* ---- the optimizer on the device ----------------------------------------------------- */

int mpl_cuda_optim_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  char archopt[48];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  const char *opts[] = {archopt, "--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false"};
  return cudev_compile(mpl_cuda_optim_src, "mpl_optim.cu", "the optimizer kernels", opts, 5, ptx, log, logn, err);
}


/* At init: the optimizer kernels for this GPU, their handles, the partial-sums buffer. */
int cudev_load_optim(CudaDev *cd, MplErr *err) {
  char *ptx = NULL, log[1024];
  if (mpl_cuda_optim_compile(cd->arch, &ptx, log, sizeof log, err) != MPL_OK) return MPL_ERR;
  const char *const names[] = {"mpl_sgd",        "mpl_adamw",      "mpl_scale",      "mpl_sumsq",
                               "mpl_sumsq_final", "mpl_adamw_list", "mpl_scale_list", "mpl_sumsq_list",
                               "mpl_sumsq_final_list", "mpl_sgd_list"};
  CUfunction *const fns[] = {&cd->f_sgd,         &cd->f_adamw,      &cd->f_scale,        &cd->f_sumsq,
                             &cd->f_sumsq_final, &cd->f_adamw_list, &cd->f_scale_list,   &cd->f_sumsq_list,
                             &cd->f_sumsq_final_list, &cd->f_sgd_list};
  if (load_program(cd, ptx, &cd->omod, "the optimizer kernels", names, fns, 10, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaMalloc((void **)&cd->partial, sizeof(double) * MPL_OPT_LIST * SUMSQ_PARTS));
  return MPL_OK;
}

/* cudev_launch of an optimizer kernel, profiled as one. */
static int launch_optim(CudaDev *cd, CUfunction f, int64_t blocks, int block, void **params, MplErr *err) {
  cudev_prof_begin(cd, PROF_OPTIM);
  int st = cudev_launch(cd, f, blocks, block, params, err);
  cudev_prof_end(cd);
  return st;
}

/* Blocks of BLOCK threads for an elementwise loop over n (grid-stride past max_blocks). */
static int64_t elementwise_blocks(const CudaDev *cd, int64_t n) {
  int64_t b = (n + BLOCK - 1) / BLOCK;
  return b < 1 ? 1 : b > cd->max_blocks ? cd->max_blocks : b;
}

/* Two launches: partial sums (a number of blocks fixed by n), then their fixed-tree sum. */
int cuda_sumsq_f64(MplDevice *d, const float *g, int64_t n, double *out, MplErr *err) {
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

int cuda_scale_f32(MplDevice *d, float *g, int64_t n, float coef, MplErr *err) {
  CudaDev *cd = d->impl;
  if (n <= 0) return MPL_OK;
  long long nn = (long long)n;
  void *a[] = {&g, &nn, &coef};
  return launch_optim(cd, cd->f_scale, elementwise_blocks(cd, n), BLOCK, a, err);
}

int cuda_sgd(MplDevice *d, float *p, const float *g, float *buf, int64_t n, double lr, double momentum,
                    bool first_step, MplErr *err) {
  CudaDev *cd = d->impl;
  if (n <= 0) return MPL_OK;
  long long nn = (long long)n;
  float neg_lr = (float)-lr, mom = (float)momentum; /* as mpl_sgd_update rounds them */
  int mode = (momentum == 0 || !buf) ? 0 : first_step ? 1 : 2;
  void *a[] = {&p, (void *)&g, &buf, &nn, &neg_lr, &mom, &mode};
  return launch_optim(cd, cd->f_sgd, elementwise_blocks(cd, n), BLOCK, a, err);
}

int cuda_adamw(MplDevice *d, float *p, const float *g, float *m, float *v, int64_t n, double lr, double beta1,
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

/* ---- the multi-tensor forms: one launch (two for the sums) over up to MPL_OPT_LIST tensors,
 * each tensor's elements, blocks and tree as its single launch's (runtime/cuda/optim.cu) ---- */

int cuda_sumsq_list(MplDevice *d, const MplOptTensor *t, int k, MplErr *err) {
  CudaDev *cd = d->impl;
  MplOptList L;
  int64_t blocks = mpl_opt_list_fill(&L, t, k, SUMSQ_PER_BLOCK, SUMSQ_PARTS);
  void *a[] = {&L, &cd->partial};
  if (launch_optim(cd, cd->f_sumsq_list, blocks, BLOCK, a, err) != MPL_OK) return MPL_ERR;
  return launch_optim(cd, cd->f_sumsq_final_list, k, BLOCK, a, err);
}

int cuda_scale_list(MplDevice *d, const MplOptTensor *t, int k, float coef, MplErr *err) {
  CudaDev *cd = d->impl;
  MplOptList L;
  int64_t blocks = mpl_opt_list_fill(&L, t, k, BLOCK, cd->max_blocks);
  void *a[] = {&L, &coef};
  return launch_optim(cd, cd->f_scale_list, blocks, BLOCK, a, err);
}

int cuda_adamw_list(MplDevice *d, const MplOptTensor *t, int k, double lr, double beta1, double beta2, double eps,
                    int64_t step, MplErr *err) {
  CudaDev *cd = d->impl;
  MplOptList L;
  int64_t blocks = mpl_opt_list_fill(&L, t, k, BLOCK, cd->max_blocks);
  MplAdamWScalars s; /* shared by the tensors: all but decay and do_decay, which are per row */
  for (int i = 0; i < k; i++) {
    mpl_adamw_scalars(&s, lr, beta1, beta2, eps, t[i].weight_decay, step);
    L.w[i * MPL_OPT_ROW + 6] = mpl_opt_list_adamw_word(&s);
  }
  int small = s.small;
  void *a[] = {&L, &s.w1, &s.b2, &s.w2, &s.neg_step, &s.bc2_sqrt, &s.eps, &small};
  return launch_optim(cd, cd->f_adamw_list, blocks, BLOCK, a, err);
}

int cuda_sgd_list(MplDevice *d, const MplOptTensor *t, int k, double lr, double momentum, bool first_step,
                  MplErr *err) {
  CudaDev *cd = d->impl;
  MplOptList L;
  int64_t blocks = mpl_opt_list_fill(&L, t, k, BLOCK, cd->max_blocks);
  for (int i = 0; i < k; i++) /* cuda_sgd's mode, per tensor */
    L.w[i * MPL_OPT_ROW + 6] = (momentum == 0 || !t[i].m) ? 0 : first_step ? 1 : 2;
  float neg_lr = (float)-lr, mom = (float)momentum; /* as mpl_sgd_update rounds them */
  void *a[] = {&L, &neg_lr, &mom};
  return launch_optim(cd, cd->f_sgd_list, blocks, BLOCK, a, err);
}

/* ---- the fused attention (runtime/cuda/sdpa.cu) ------------------------------------------- */

int mpl_cuda_sdpa_compile(const char *arch, int hs, int hv, bool in16, char **ptx, char *log, size_t logn,
                          MplErr *err) {
  char archopt[48], dhs[40], dhv[40];
  *ptx = NULL;
  if (logn) log[0] = 0;
  if (hs < 1 || hs > MPL_SDPA_MAX_HEAD || hv < 1 || hv > MPL_SDPA_MAX_HEAD)
    return mpl_errf(err, "the fused attention takes head sizes up to %d, not %d and %d", MPL_SDPA_MAX_HEAD, hs, hv);
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  snprintf(dhs, sizeof dhs, "-DMPL_SDPA_HS=%d", hs);
  snprintf(dhv, sizeof dhv, "-DMPL_SDPA_HV=%d", hv);
  const char *opts[] = {archopt, dhs, dhv, "--ftz=false", "--prec-div=true", "-DMPL_SDPA_IN16"};
  return cudev_compile(mpl_cuda_sdpa_src, "mpl_sdpa.cu", "the fused attention", opts, in16 ? 6 : 5, ptx, log, logn, err);
}

/* The kernels for head sizes hs and hv and inputs of bf16 (in16) or f32: compiled and loaded the
 * first time they are met. */
static const struct CudaSdpa *sdpa_kernels(CudaDev *cd, int hs, int hv, bool in16, MplErr *err) {
  for (int i = 0; i < cd->nsdpa; i++)
    if (cd->sdpa[i].hs == hs && cd->sdpa[i].hv == hv && cd->sdpa[i].in16 == in16) return &cd->sdpa[i];
  if (cd->nsdpa == (int)(sizeof cd->sdpa / sizeof cd->sdpa[0])) {
    mpl_errf(err, "cuda: more than %d head sizes of fused attention in one job", cd->nsdpa);
    return NULL;
  }
  struct CudaSdpa *k = &cd->sdpa[cd->nsdpa];
  char *ptx = NULL, log[1024];
  if (mpl_cuda_sdpa_compile(cd->arch, hs, hv, in16, &ptx, log, sizeof log, err) != MPL_OK) return NULL;
  const char *const names[] = {"mpl_sdpa_fwd", "mpl_sdpa_bwd_q", "mpl_sdpa_bwd_kv"};
  CUfunction *const fns[] = {&k->fwd, &k->bwd_q, &k->bwd_kv};
  if (load_program(cd, ptx, &k->mod, "the fused attention's kernels", names, fns, 3, err) != MPL_OK) return NULL;
  /* the tensor-core kernels, compiled for the head sizes they take (sdpa.cu: bf16 inputs
     hs % 16 == 0, hv % 8 == 0, the backward also hv % 16 == 0; f32 inputs, whose operands
     they round to tf32, both % 8 == 0; all <= 128; f32 inputs also as three tf32 products
     each, x3) on sm_80 and later; the keys' gradients in one kernel (bf16 up to 64) or
     in two (dk, dv; also with MPL_SDPA_TC=split). Where they are not, the CUDA-core ones. */
  k->fwd_tc = k->bwd_q_tc = k->bwd_kv_tc = k->bwd_dk_tc = k->bwd_dv_tc = NULL;
  k->fwd_x3 = k->bwd_q_x3 = k->bwd_dk_x3 = k->bwd_dv_x3 = NULL;
  const char *env = getenv("MPL_SDPA_TC"); /* MPL_SDPA_TC=0: the CUDA-core kernels only */
  bool tc = !(env && !strcmp(env, "0")), split = env && !strcmp(env, "split");
  if (tc && cd->drv.get_function(&k->fwd_tc, k->mod, "mpl_sdpa_fwd_tc") != CUDA_SUCCESS) k->fwd_tc = NULL;
  if (tc && (cd->drv.get_function(&k->fwd_x3, k->mod, "mpl_sdpa_fwd_x3") != CUDA_SUCCESS ||
             cd->drv.get_function(&k->bwd_q_x3, k->mod, "mpl_sdpa_bwd_q_x3") != CUDA_SUCCESS ||
             cd->drv.get_function(&k->bwd_dk_x3, k->mod, "mpl_sdpa_bwd_dk_x3") != CUDA_SUCCESS ||
             cd->drv.get_function(&k->bwd_dv_x3, k->mod, "mpl_sdpa_bwd_dv_x3") != CUDA_SUCCESS))
    k->fwd_x3 = k->bwd_q_x3 = k->bwd_dk_x3 = k->bwd_dv_x3 = NULL;
  if (tc && cd->drv.get_function(&k->bwd_q_tc, k->mod, "mpl_sdpa_bwd_q_tc") != CUDA_SUCCESS) tc = false;
  if (tc && (split || cd->drv.get_function(&k->bwd_kv_tc, k->mod, "mpl_sdpa_bwd_kv_tc") != CUDA_SUCCESS)) {
    k->bwd_kv_tc = NULL;
    if (cd->drv.get_function(&k->bwd_dk_tc, k->mod, "mpl_sdpa_bwd_dk_tc") != CUDA_SUCCESS ||
        cd->drv.get_function(&k->bwd_dv_tc, k->mod, "mpl_sdpa_bwd_dv_tc") != CUDA_SUCCESS)
      tc = false;
  }
  if (!tc) k->bwd_q_tc = k->bwd_kv_tc = k->bwd_dk_tc = k->bwd_dv_tc = NULL;
  k->hs = hs, k->hv = hv, k->in16 = in16;
  cd->nsdpa++;
  return k;
}

/* Blocks of SDPA_THREADS rows (ORDER: SDPA_BR in runtime/cuda/sdpa.cu) over heads x rows. */
enum { SDPA_THREADS = 64 };
static int64_t sdpa_blocks(int64_t batch, int64_t heads, int64_t rows) {
  return batch * heads * ((rows + SDPA_THREADS - 1) / SDPA_THREADS);
}

/* The kernels a step runs: the forward, dq, and the keys' gradients in one kernel (kv) or two
 * (dk, dv); threads a block of the forward's and of the backward's (SDPA_THREADS rows, a
 * thread each on the CUDA cores, two on the tensor cores). On tensor cores: bf16 inputs (a bf16 step); f32 inputs of a tf32 step, or
 * of an f32 one under mplrun --tf32, with tf32 operands; of an f32 step with each product as
 * three tf32 ones (x3); never a bf16 step's f32 inputs (--no-bf16-storage: they round to
 * bf16, on the CUDA cores). Where the kernels are not compiled, the CUDA-core ones. */
typedef struct SdpaSet {
  CUfunction fwd, bwd_q, bwd_kv, bwd_dk, bwd_dv;
  int fwd_threads, bwd_threads;
} SdpaSet;

static SdpaSet sdpa_set(const MplDevice *d, const struct CudaSdpa *k, const MplSdpa *a) {
  SdpaSet t = {k->fwd, k->bwd_q, k->bwd_kv, NULL, NULL, SDPA_THREADS, SDPA_THREADS};
  if (a->in16 || (!a->bf16 && (a->tf32 || d->tf32))) {
    if (k->fwd_tc) t.fwd = k->fwd_tc, t.fwd_threads = 2 * SDPA_THREADS;
    if (k->bwd_q_tc) /* (else the backward on the CUDA cores) */
      t = (SdpaSet){t.fwd, k->bwd_q_tc, k->bwd_kv_tc, k->bwd_dk_tc, k->bwd_dv_tc, t.fwd_threads, 2 * SDPA_THREADS};
  } else if (!a->bf16 && k->fwd_x3) {
    t = (SdpaSet){k->fwd_x3, k->bwd_q_x3, NULL, k->bwd_dk_x3, k->bwd_dv_x3, 2 * SDPA_THREADS, 2 * SDPA_THREADS};
  }
  return t;
}

int cuda_sdpa(MplDevice *d, const MplSdpa *a, MplErr *err) {
  CudaDev *cd = d->impl;
  const struct CudaSdpa *k = sdpa_kernels(cd, (int)a->hs, (int)a->hv, a->in16, err);
  if (!k) return MPL_ERR;
  SdpaSet ks = sdpa_set(d, k, a);
  long long T = a->T, S = a->S;
  int H = (int)a->H, Hkv = (int)a->Hkv, causal = a->causal, bf16 = a->bf16;
  float scale = a->scale;
  /* the inputs' pointers: f32, or bf16 for the in16 kernels */
  const void *q = a->in16 ? (const void *)a->q16 : a->q, *kk = a->in16 ? (const void *)a->k16 : a->k;
  const void *v = a->in16 ? (const void *)a->v16 : a->v;
  void *p[] = {&q, &kk, &v, (void *)&a->out, (void *)&a->lse, &T, &S, &H, &Hkv, &scale, &causal, &bf16};
  cudev_prof_begin(cd, PROF_SDPA);
  /* a tensor-core forward takes p's first 11 parameters (not bf16: bf16 inputs mean a bf16
     step, job_validate) */
  int st = cudev_launch(cd, ks.fwd, sdpa_blocks(a->B, a->H, a->T), ks.fwd_threads, p, err);
  cudev_prof_end(cd);
  return st;
}

int cuda_sdpa_bwd(MplDevice *d, const MplSdpa *a, MplErr *err) {
  CudaDev *cd = d->impl;
  const struct CudaSdpa *k = sdpa_kernels(cd, (int)a->hs, (int)a->hv, a->in16, err);
  if (!k) return MPL_ERR;
  SdpaSet ks = sdpa_set(d, k, a);
  int threads = ks.bwd_threads;
  long long T = a->T, S = a->S;
  int H = (int)a->H, Hkv = (int)a->Hkv, causal = a->causal, bf16 = a->bf16;
  float scale = a->scale;
  const void *q = a->in16 ? (const void *)a->q16 : a->q, *kk = a->in16 ? (const void *)a->k16 : a->k;
  const void *v = a->in16 ? (const void *)a->v16 : a->v, *o = a->in16 ? (const void *)a->out16 : a->out;
  const void *dout = a->in16 ? (const void *)a->dout16 : a->dout;
  void *pq[] = {&q, &kk, &v, &o, (void *)&a->lse, &dout, (void *)&a->dq, &T, &S, &H, &Hkv, &scale, &causal, &bf16};
  void *pkv[] = {&q,   &kk, &v,   &o,      (void *)&a->lse, &dout, (void *)&a->dk, (void *)&a->dv,
                 &T,   &S,  &H,   &Hkv,    &scale,          &causal, &bf16};
  cudev_prof_begin(cd, PROF_SDPA_BWD);
  /* on tensor cores: two threads a row (or key), the parameters but bf16; the keys' gradients
     in one kernel or in two (dk and dv, each taking the one's parameters) */
  int64_t kblocks = sdpa_blocks(a->B, a->Hkv, a->S);
  int st = cudev_launch(cd, ks.bwd_q, sdpa_blocks(a->B, a->H, a->T), threads, pq, err);
  if (st == MPL_OK && ks.bwd_kv) {
    st = cudev_launch(cd, ks.bwd_kv, kblocks, threads, pkv, err);
  } else if (st == MPL_OK) {
    st = cudev_launch(cd, ks.bwd_dk, kblocks, threads, pkv, err);
    if (st == MPL_OK) st = cudev_launch(cd, ks.bwd_dv, kblocks, threads, pkv, err);
  }
  cudev_prof_end(cd);
  return st;
}

/* ---- the fused cross-entropy (runtime/cuda/ce.cu; issue 14 item 3) ---------------------------
 * ce_cpu.c's algorithm: per chunk of classes the logits by cuBLAS into the scratch, the row
 * kernels, and backward the two products of g; the scratch (s, m, tl, then L [N, chunk], as
 * the CPU's) is the device's, grown to the largest step met. */

int mpl_cuda_ce_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  char archopt[48];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  const char *opts[] = {archopt, "--ftz=false", "--prec-div=true"};
  return cudev_compile(mpl_cuda_ce_src, "mpl_ce.cu", "the fused cross-entropy", opts, 3, ptx, log, logn, err);
}

enum { CE_THREADS = 256 }; /* ORDER: CE_THREADS in runtime/cuda/ce.cu */

static int ce_kernels(CudaDev *cd, MplErr *err) {
  if (cd->cemod) return MPL_OK;
  char *ptx = NULL, log[1024];
  if (mpl_cuda_ce_compile(cd->arch, &ptx, log, sizeof log, err) != MPL_OK) return MPL_ERR;
  const char *const names[] = {"mpl_ce_rows", "mpl_ce_finish"};
  CUfunction *const fns[] = {&cd->ce_rows, &cd->ce_finish};
  return load_program(cd, ptx, &cd->cemod, "the fused cross-entropy's kernels", names, fns, 2, err);
}

/* Row-major C = op(A) op(B) + beta C (explicit leading dimensions), as cuda_gemm does it: A and
 * B f32 (bf16: FAST_16BF, they hold bf16 values), or stored as bf16 (in16). */
static int ce_gemm(CudaDev *cd, bool bf16, bool in16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A,
                   int64_t lda, const void *B, int64_t ldb, float beta, float *C, int64_t ldc, MplErr *err) {
  const float alpha = 1.0f;
  cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  cudaDataType_t in = in16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasComputeType_t ct = in16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_16BF;
  if (cudev_graph_gemm(cd, 1 + ((uint64_t)bf16 << 8) + ((uint64_t)in16 << 9) + ((uint64_t)ta << 10) + ((uint64_t)tb << 11),
                       M, N, K, A, B, C, beta, err) != MPL_OK)
    return MPL_ERR;
  cudev_prof_begin(cd, PROF_GEMM);
  cublasStatus_t st =
      bf16 || in16 ? mpl_cublas.gemm_ex(cd->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, in, (int)ldb, A, in, (int)lda,
                                  &beta, C, CUDA_R_32F, (int)ldc, ct, CUBLAS_GEMM_DEFAULT)
                   : mpl_cublas.sgemm(cd->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C,
                                 (int)ldc);
  cudev_prof_end(cd);
  CUBLAS_CHECK(st);
  return MPL_OK;
}

/* JS_CE over blocks of rows: per block the logits by cuBLAS, mpl_ce_rows (loss per row, g in
 * place), dx1 of the block and dw1 (+)= by cuBLAS; then mpl_ce_finish (the mean loss). */
/* The scratch for a (its block of logits, the row losses, g's bf16 copy), grown from the
 * pool the arenas come from: init_rank calls it before training, so a card without room for
 * it is refused before step 1, not in the first step's loss. */
int cuda_ce_reserve(MplDevice *d, const MplCe *a, MplErr *err) {
  CudaDev *cd = d->impl;
  int64_t need = mpl_ce_cpu_scratch(a);
  if (need <= cd->ce_cap) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_flush(cd, err) != MPL_OK) return MPL_ERR;
  /* stream-ordered, from the pool the arenas come from (its peak counts it) */
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
  return MPL_OK;
}

int cuda_ce(MplDevice *d, const MplCe *a, MplErr *err) {
  CudaDev *cd = d->impl;
  if (a->N < 1 || a->K < 1 || a->V < 1 || a->chunk < 1 || a->chunk > a->N || a->N > INT32_MAX ||
      a->K > INT32_MAX || a->V > INT32_MAX || a->chunk * a->V > INT32_MAX)
    return mpl_errf(err, "cuda: the fused cross-entropy's sizes (N %lld, K %lld, V %lld, rows %lld) exceed cuBLAS's",
                    (long long)a->N, (long long)a->K, (long long)a->V, (long long)a->chunk);
  if (ce_kernels(cd, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cuda_ce_reserve(d, a, err) != MPL_OK) return MPL_ERR;
  double *loss = (double *)(void *)cd->ce_scratch;
  float *L = cd->ce_scratch + 2 * a->N, scale = (float)(1.0 / (double)a->N);
  /* bf16 inputs: g's bf16 copy after L (mpl_ce_cpu_scratch counts it), for its products */
  unsigned short *L16 = a->in16 ? (unsigned short *)(void *)(L + a->chunk * a->V) : NULL;
  long long N = a->N, V = a->V;
  int bf16 = a->bf16;
  int64_t K = a->K, ldw = a->tb ? K : V;
  /* the products' operands: f32, or their bf16 copies (in16: x's, w's and g's) */
  size_t es = a->in16 ? 2 : 4;
  const char *x = a->in16 ? (const void *)a->x16 : (const void *)a->x;
  const void *w = a->in16 ? (const void *)a->w16 : (const void *)a->w, *G = a->in16 ? (const void *)L16 : L;
  for (int64_t r0 = 0; r0 < a->N; r0 += a->chunk) {
    long long rr = a->N - r0 < a->chunk ? a->N - r0 : a->chunk, lr0 = r0;
    const void *xb = x + (size_t)(r0 * K) * es;
    if (ce_gemm(cd, bf16, a->in16, false, a->tb, rr, V, K, xb, K, w, ldw, 0.0f, L, V, err) != MPL_OK) return MPL_ERR;
    void *p[] = {&L, &V, &lr0, (void *)&a->targets, &loss, &scale, &bf16, &L16};
    cudev_prof_begin(cd, PROF_CE);
    int st = cudev_launch(cd, cd->ce_rows, rr, CE_THREADS, p, err);
    cudev_prof_end(cd);
    if (st != MPL_OK) return MPL_ERR;
    if (ce_gemm(cd, bf16, a->in16, false, !a->tb, rr, K, V, G, V, w, ldw, 0.0f, a->dx + r0 * K, K, err) != MPL_OK)
      return MPL_ERR;
    float beta = r0 ? 1.0f : 0.0f;
    st = a->tb ? ce_gemm(cd, bf16, a->in16, true, false, V, K, rr, G, V, xb, K, beta, a->dw, K, err)
               : ce_gemm(cd, bf16, a->in16, true, false, K, V, rr, xb, K, G, V, beta, a->dw, V, err);
    if (st != MPL_OK) return MPL_ERR;
  }
  void *pf[] = {&loss, (void *)&a->loss, &N};
  cudev_prof_begin(cd, PROF_CE);
  int st = cudev_launch(cd, cd->ce_finish, 1, CE_THREADS, pf, err);
  cudev_prof_end(cd);
  return st;
}

/* ---- an embedding's gradient (runtime/cuda/embed.cu) -------------------------------------
 * out zeroed, then one block per position (runtime/cuda/embed.cu: a block per row named does
 * the row's work); the CPU's bits. */

int mpl_cuda_emb_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  char archopt[48];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  const char *opts[] = {archopt, "--fmad=false", "--ftz=false"};
  return cudev_compile(mpl_cuda_emb_src, "mpl_embed.cu", "the embedding gradient", opts, 3, ptx, log, logn, err);
}

enum { EMB_THREADS = 256 }; /* ORDER: EMB_THREADS in runtime/cuda/embed.cu */

int cuda_emb_grad(MplDevice *d, const MplEmbGrad *a, MplErr *err) {
  CudaDev *cd = d->impl;
  if (a->M < 1 || a->N < 1 || a->K < 1 || a->M > INT32_MAX)
    return mpl_errf(err, "cuda: an embedding gradient of %lld positions, %lld rows of %lld", (long long)a->M,
                    (long long)a->K, (long long)a->N);
  if (!cd->embmod) {
    char *ptx = NULL, log[1024];
    if (mpl_cuda_emb_compile(cd->arch, &ptx, log, sizeof log, err) != MPL_OK) return MPL_ERR;
    const char *const names[] = {"mpl_emb_grad"};
    CUfunction *const fns[] = {&cd->emb_grad};
    if (load_program(cd, ptx, &cd->embmod, "the embedding gradient's kernel", names, fns, 1, err) != MPL_OK)
      return MPL_ERR;
  }
  CUDA_CHECK(cudaSetDevice(cd->dev));
  if (cudev_graph_op(cd, GOP_ZERO, (uint64_t)(a->K * a->N) * sizeof(float), 0, err) != MPL_OK) return MPL_ERR;
  cudev_prof_begin(cd, PROF_EMB);
  cudaError_t z = cudaMemsetAsync(a->out, 0, (size_t)(a->K * a->N) * sizeof(float), cd->compute);
  cudev_prof_end(cd);
  CUDA_CHECK(z);
  long long M = a->M, N = a->N, K = a->K;
  void *p[] = {(void *)&a->idx, (void *)&a->dy, (void *)&a->out, &M, &N, &K};
  cudev_prof_begin(cd, PROF_EMB);
  int st = cudev_launch(cd, cd->emb_grad, a->M, EMB_THREADS, p, err);
  cudev_prof_end(cd);
  return st;
}

#else /* !MPL_HAVE_CUDA: the compilers say so */

static int no_nvrtc(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  *ptx = NULL;
  if (logn) log[0] = 0;
  return mpl_errf(err, "this mplrun was built without CUDA (no NVRTC for %s)", arch);
}

int mpl_cuda_optim_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  return no_nvrtc(arch, ptx, log, logn, err);
}

int mpl_cuda_sdpa_compile(const char *arch, int hs, int hv, bool in16, char **ptx, char *log, size_t logn,
                          MplErr *err) {
  (void)in16;
  return no_nvrtc(arch, ptx, log, logn, err);
}

int mpl_cuda_ce_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  return no_nvrtc(arch, ptx, log, logn, err);
}

int mpl_cuda_emb_compile(const char *arch, char **ptx, char *log, size_t logn, MplErr *err) {
  return no_nvrtc(arch, ptx, log, logn, err);
}

#endif
