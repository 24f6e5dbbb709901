/*
 * device_cpu.c — the `cpu` device backend: the arena in host memory, the job's
 * LLVM-compiled kernels run over the rank's OpenMP team, matrix products through
 * mpl_gemm_f32_batched (oneDNN, which threads with the same OpenMP runtime),
 * precision = bf16's through mpl_gemm_bf16_batched.
 *
 * One team for both: oneDNN's OpenMP workers spin for a while after each product, waiting
 * for the next parallel region. A kernel pool of our own (pthreads, as before 2026-12-05) had
 * its worker share a core with that spinning thread on every kernel that followed a product,
 * and the llama bench on 1 rank and 2 threads took 10-12% longer than with
 * OMP_WAIT_POLICY=PASSIVE. Running the kernels as OpenMP parallel regions hands them to the
 * spinning threads instead.
 *
 * Invariants:
 *  - the arena is one 64-byte aligned host allocation (mpl_malloc);
 *  - a kernel's outer iterations [0, n_outer) are cut into contiguous chunks, one per
 *    thread; iterations are independent by the kernel ABI, so the bits never depend on
 *    the thread count, only the speed does;
 *  - a team belongs to one rank: the rank's thread is its initial thread (OpenMP gives each
 *    thread that opens a parallel region its own team), so ranks in one process never share one.
 */
#include "exec.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "jit_cpu.h"

/* Below this much work (elements touched) a kernel runs inline on the rank's thread. */
enum { PAR_MIN_WORK = 1 << 15 };

/* MPL_CPU_PROFILE=1: time per kernel (by entry point) and per GEMM shape, printed to
 * stderr when the device is freed (a debugging aid; off by default): over the steps after
 * the first when there are some (the first step's kernels fault in the arena's and the
 * optimizer state's pages: a transpose took 3.5 ms a call over 5 steps, 0.69 ms after
 * the first), else over the one step. */
enum { PROF_SLOTS = 1024 };
typedef struct ProfSlot {
  const void *key;   /* kernel entry point (the fused attention's: mpl_sdpa_cpu_fwd, _bwd); NULL for a GEMM */
  int64_t m, n, k, batch, n_outer;
  int ta, tb;
  int64_t calls, calls_warm;
  double s, s_warm; /* all steps; the steps after the first */
} ProfSlot;

static atomic_int prof_warm; /* set after the first step: mpl_cpu_profile_warm */

void mpl_cpu_profile_warm(void) { atomic_store(&prof_warm, 1); }

typedef struct CpuDev {
  int threads;
  ProfSlot *prof; /* PROF_SLOTS, or NULL when not profiling */
  int nprof;
  MplGemmBf16 bf16; /* precision = bf16's products: bf16 units where the CPU has them */
  MplSdpaIsa sdpa_isa; /* the fused attention's instruction set (sdpa_cpu.c) */
  float *ce_scratch;   /* the fused cross-entropy's chunk of logits and row state (ce_cpu.c), */
  int64_t ce_cap;      /* kept between steps: floats */
} CpuDev;

/* CPU time of the calling thread: what one rank thread spends, whatever else the
 * machine runs (with --threads > 1 the workers' time is not counted). */
static double prof_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ProfSlot *prof_slot(CpuDev *cd, const ProfSlot *key) {
  for (int i = 0; i < cd->nprof; i++) {
    ProfSlot *p = &cd->prof[i];
    if (p->key == key->key && p->m == key->m && p->n == key->n && p->k == key->k && p->batch == key->batch &&
        p->ta == key->ta && p->tb == key->tb && p->n_outer == key->n_outer)
      return p;
  }
  if (cd->nprof == PROF_SLOTS) return NULL;
  cd->prof[cd->nprof] = *key;
  return &cd->prof[cd->nprof++];
}

static void prof_add(CpuDev *cd, const ProfSlot *key, double s) {
  ProfSlot *p = prof_slot(cd, key);
  if (!p) return;
  p->calls++, p->s += s;
  if (atomic_load(&prof_warm)) p->calls_warm++, p->s_warm += s;
}

static int prof_cmp(const void *a, const void *b) {
  double x = ((const ProfSlot *)a)->s, y = ((const ProfSlot *)b)->s;
  return x < y ? 1 : x > y ? -1 : 0;
}

static void prof_print(CpuDev *cd, int index) {
  bool warm = false;
  for (int i = 0; i < cd->nprof; i++) warm |= cd->prof[i].calls_warm > 0;
  if (warm) /* the steps after the first only */
    for (int i = 0; i < cd->nprof; i++) cd->prof[i].calls = cd->prof[i].calls_warm, cd->prof[i].s = cd->prof[i].s_warm;
  int n = 0;
  for (int i = 0; i < cd->nprof; i++)
    if (cd->prof[i].calls) cd->prof[n++] = cd->prof[i];
  cd->nprof = n;
  qsort(cd->prof, (size_t)cd->nprof, sizeof *cd->prof, prof_cmp);
  double total = 0;
  for (int i = 0; i < cd->nprof; i++) total += cd->prof[i].s;
  fprintf(stderr, "cpu profile, device %d: %.1f ms in kernels and GEMMs (%s)\n", index, total * 1e3,
          warm ? "the steps after the first" : "one step: with more, the first is left out");
  if (cd->bf16.units || cd->bf16.hw)
    fprintf(stderr, "  bf16 products in bf16 units: %llu\n", (unsigned long long)cd->bf16.units);
  for (int i = 0; i < cd->nprof; i++) {
    const ProfSlot *p = &cd->prof[i];
    if (p->key == (const void *)(uintptr_t)mpl_sdpa_cpu_fwd || p->key == (const void *)(uintptr_t)mpl_sdpa_cpu_bwd)
      fprintf(stderr, "  %8.2f ms %6lld x  sdpa%s (%s) units %lld\n", p->s * 1e3, (long long)p->calls,
              p->key == (const void *)(uintptr_t)mpl_sdpa_cpu_fwd ? "" : " backward", mpl_sdpa_isa_name(cd->sdpa_isa),
              (long long)p->n_outer);
    else if (p->key)
      fprintf(stderr, "  %8.2f ms %6lld x  kernel %p n_outer %lld\n", p->s * 1e3, (long long)p->calls, p->key,
              (long long)p->n_outer);
    else
      fprintf(stderr, "  %8.2f ms %6lld x  gemm %c%c M %lld N %lld K %lld batch %lld: %.1f GFLOP/s\n", p->s * 1e3,
              (long long)p->calls, p->ta ? 'T' : 'N', p->tb ? 'T' : 'N', (long long)p->m, (long long)p->n,
              (long long)p->k, (long long)p->batch,
              2e-9 * (double)p->m * (double)p->n * (double)p->k * (double)p->batch * (double)p->calls / p->s);
  }
}

static inline void chunk_range(int64_t n, int nchunks, int c, int64_t *b, int64_t *e) {
  *b = n * c / nchunks;
  *e = n * (c + 1) / nchunks;
}

static int cpu_init(MplDevice *d, int index, int threads, MplErr *err) {
  d->index = index;
  d->threads = threads < 1 ? 1 : threads;
  CpuDev *cd = mpl_calloc(1, sizeof *cd);
  if (!cd) return mpl_errf(err, "cpu: out of memory");
  d->impl = cd;
  const char *prof = getenv("MPL_CPU_PROFILE");
  if (prof && *prof && *prof != '0') {
    cd->prof = mpl_calloc(PROF_SLOTS, sizeof *cd->prof);
    if (!cd->prof) return mpl_errf(err, "cpu: out of memory");
  }
  mpl_gemm_bf16_init(&cd->bf16);
  cd->sdpa_isa = mpl_sdpa_cpu_isa();
  cd->threads = d->threads;
  return MPL_OK;
}

/* Bytes of the arenas and update states this process holds and fused cross-entropy scratches (cpu_arena_alloc's
 * and cpu_ce_reserve's, less what is freed): they are mappings whose pages come in when first touched, in training,
 * so the kernel's MemAvailable does not count them yet when the next one is checked. */
static _Atomic int64_t cpu_held;

static void cpu_free(MplDevice *d) {
  CpuDev *cd = d->impl;
  if (!cd) return;
  if (cd->prof) prof_print(cd, d->index);
  mpl_free(cd->prof);
  mpl_gemm_bf16_free(&cd->bf16);
  if (cd->ce_scratch) atomic_fetch_sub(&cpu_held, (int64_t)mpl_alloc_size(cd->ce_scratch));
  mpl_free(cd->ce_scratch);
  mpl_free(cd);
  d->impl = NULL;
}

static void cpu_bind_thread(MplDevice *d) {
  mpl_gemm_set_threads(d->threads);
}

/* Before an arena (or a rank's update state) is allocated: would it fit, with those held
 * before it (MemAvailable less cpu_held)? An address-space limit (ulimit -v) must leave room for the GEMM
 * library's own buffers too (256 MiB), which otherwise fail inside oneDNN and crash it
 * (a segfault, or a C++ exception nothing catches).
 * A run that would be killed by the kernel, or crash, is refused with what it needs.
 * MPL_NO_MEMORY_CHECK=1 skips this (a machine whose swap is meant to be used). */
static int cpu_memory_check(const MplDevice *d, uint64_t bytes, const char *what, MplErr *err) {
  if (mpl_memory_check_off()) return MPL_OK;
  const double gib = 1024.0 * 1024 * 1024;
  /* (small totals are not checked: reading /proc costs more than they risk; the total, not
   * this block alone, so that many ranks of small arenas are checked too) */
  int64_t held = atomic_load(&cpu_held);
  double plannable = (uint64_t)held + bytes < (64u << 20) ? -1 : mpl_mem_plannable();
  if (plannable >= 0 && (double)(held + bytes) > plannable) {
    char before[96] = "";
    if (held > 0) snprintf(before, sizeof before, ", and the ranks before it hold %.2f GiB they have not touched yet", held / gib);
    return mpl_errf(err, "cpu: rank %d needs %.2f GiB more for %s%s, but this machine has %.2f "
                    "GiB of memory available, of which a run may plan 95%%: the run would be killed. Use more "
                    "pipeline ranks or processes (--mesh, mpirun on several machines), more micro-batches of fewer "
                    "rows, a smaller batch, or @recompute (MPL_NO_MEMORY_CHECK=1 runs it anyway)", d->index,
                    bytes / gib, what, before, plannable / 0.95 / gib);
  }
  struct rlimit rl;
  int64_t used = mpl_proc_kb("/proc/self/statm", NULL);
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && used >= 0 &&
      (double)used * 1024 + (double)bytes + 256.0 * 1024 * 1024 > (double)rl.rlim_cur)
    return mpl_errf(err, "cpu: rank %d needs %.2f GiB more for %s, and the GEMM library 0.25 GiB, "
                    "but the address-space limit (ulimit -v) is %.2f GiB with %.2f GiB in use", d->index, bytes / gib,
                    what, (double)rl.rlim_cur / gib, used * 1024.0 / gib);
  return MPL_OK;
}

static int cpu_arena_alloc(MplDevice *d, uint64_t bytes, void **base, MplErr *err) {
  if (bytes > (uint64_t)SIZE_MAX - 64) return mpl_errf(err, "cpu: arena of %llu bytes is too large", (unsigned long long)bytes);
  if (cpu_memory_check(d, bytes, "its arena or update state", err) != MPL_OK) return MPL_ERR;
  *base = mpl_calloc(1, bytes ? (size_t)bytes : 1); /* a big one is a fresh mapping: no memset */
  if (*base) atomic_fetch_add(&cpu_held, (int64_t)mpl_alloc_size(*base));
  if (!*base)
    return mpl_errf(err, "cpu: cannot allocate %llu bytes for rank %d (its arena or its update state)",
                    (unsigned long long)bytes, d->index);
  return MPL_OK;
}

static void cpu_arena_free(MplDevice *d, void *base) {
  if (base) atomic_fetch_sub(&cpu_held, (int64_t)mpl_alloc_size(base));
  mpl_free(base);
}

/* Runs fn over [0, n_outer): inline when small, else one contiguous chunk per thread of
 * the rank's team (chunk c to thread c mod the team's size, should OpenMP give fewer). */
static int cpu_kernel_run(MplDevice *d, MplKernelFn fn, void **args, const int64_t *scalars,
                          int64_t n_outer, int64_t work, MplErr *err) {
  (void)err;
  CpuDev *cd = d->impl;
  int nchunks = cd->threads;
  if (nchunks > n_outer) nchunks = (int)n_outer;
  if (nchunks <= 1 || work < PAR_MIN_WORK) {
    if (n_outer > 0) fn(args, scalars, 0, n_outer);
    return MPL_OK;
  }
#ifndef _OPENMP /* the cuda-only mplrun: no JIT, so no kernel comes here; one thread would do */
  fn(args, scalars, 0, n_outer);
#else
#pragma omp parallel num_threads(nchunks)
  {
    int team = omp_get_num_threads();
    for (int c = omp_get_thread_num(); c < nchunks; c += team) {
      int64_t b, e;
      chunk_range(n_outer, nchunks, c, &b, &e);
      if (b < e) fn(args, scalars, b, e);
    }
  }
#endif
  return MPL_OK;
}

static int cpu_kernel(MplDevice *d, MplKernelFn fn, void **args, const int64_t *scalars,
                      int64_t n_outer, int64_t work, MplErr *err) {
  CpuDev *cd = d->impl;
  if (!cd->prof) return cpu_kernel_run(d, fn, args, scalars, n_outer, work, err);
  double t0 = prof_now();
  int rc = cpu_kernel_run(d, fn, args, scalars, n_outer, work, err);
  ProfSlot key = {.key = (const void *)(uintptr_t)fn, .n_outer = n_outer};
  prof_add(cd, &key, prof_now() - t0);
  return rc;
}

/* Row-major batched product; leading dimensions follow from the transposes. A bf16 step
 * (precision = bf16) goes to bf16 units where the CPU has them (gemm.c); tf32 is f32 here. */
static int cpu_gemm_run(MplDevice *d, const JobStep *s, const void *a, const void *b, float *c,
                    MplErr *err) {
  CpuDev *cd = d->impl;
  int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N, ldc = s->N;
  int64_t batch = s->batch < 1 ? 1 : s->batch;
  float alpha = (float)s->alpha, beta = (float)s->beta;
  int rc;
  if (s->in16) /* operands stored as bf16 */
    rc = mpl_gemm_bf16s_batched(&cd->bf16, s->ta, s->tb, s->M, s->N, s->K, alpha, a, lda, s->stride_a, b, ldb,
                                s->stride_b, beta, c, ldc, s->stride_c, batch);
  else if (s->prec == PREC_BF16)
    rc = mpl_gemm_bf16_batched(&cd->bf16, s->ta, s->tb, s->M, s->N, s->K, alpha, a, lda, s->stride_a, b, ldb,
                               s->stride_b, beta, c, ldc, s->stride_c, batch);
  else
    rc = mpl_gemm_f32_batched(s->ta, s->tb, s->M, s->N, s->K, alpha, a, lda, s->stride_a, b, ldb, s->stride_b, beta,
                              c, ldc, s->stride_c, batch);
  if (rc != MPL_OK)
    return mpl_errf(err, "cpu: matrix product [%lld x %lld x %lld] x %lld failed", (long long)s->M,
                    (long long)s->N, (long long)s->K, (long long)batch);
  return MPL_OK;
}

static int cpu_gemm(MplDevice *d, const JobStep *s, const void *a, const void *b, float *c, MplErr *err) {
  CpuDev *cd = d->impl;
  if (!cd->prof) return cpu_gemm_run(d, s, a, b, c, err);
  double t0 = prof_now();
  int rc = cpu_gemm_run(d, s, a, b, c, err);
  ProfSlot key = {.m = s->M, .n = s->N, .k = s->K, .batch = s->batch < 1 ? 1 : s->batch, .ta = s->ta, .tb = s->tb};
  prof_add(cd, &key, prof_now() - t0);
  return rc;
}

/* The fused attention: sdpa_cpu.c's units over the rank's threads, as a kernel's outer
 * iterations (contiguous chunks; the bits do not depend on them). */
static int cpu_sdpa_run(MplDevice *d, const MplSdpa *a, bool backward, MplErr *err) {
  CpuDev *cd = d->impl;
  MplSdpaRun run = {.a = *a, .isa = cd->sdpa_isa};
  void *args[1] = {&run};
  MplKernelFn fn = backward ? mpl_sdpa_cpu_bwd : mpl_sdpa_cpu_fwd;
  int64_t units = mpl_sdpa_cpu_units(a, backward), work = INT64_MAX / 2; /* always worth the threads */
  if (cpu_kernel(d, fn, args, NULL, units, work, err) != MPL_OK) return MPL_ERR;
  if (atomic_load(&run.failed)) return mpl_errf(err, "cpu: out of memory for the attention's tiles");
  return MPL_OK;
}

static int cpu_sdpa(MplDevice *d, const MplSdpa *a, MplErr *err) { return cpu_sdpa_run(d, a, false, err); }
static int cpu_sdpa_bwd(MplDevice *d, const MplSdpa *a, MplErr *err) { return cpu_sdpa_run(d, a, true, err); }

/* The fused cross-entropy (ce_cpu.c): its row loops over the rank's threads as a kernel's
 * outer iterations, its products through gemm.c; the scratch ([rows, V] logits, which the
 * plan does not hold) is the device's, grown to the largest step met and kept. */
static int cpu_ce_rows(void *ctx, MplKernelFn fn, void **args, int64_t n, MplErr *err) {
  return cpu_kernel(ctx, fn, args, NULL, n, INT64_MAX / 2, err);
}

/* Grows the scratch to a's, through the memory check: init_rank calls it for each fused
 * cross-entropy of the rank's stages before training, so a run that cannot hold it is
 * refused before step 1, and the scratch counts with the arenas of the ranks after it. */
static int cpu_ce_reserve(MplDevice *d, const MplCe *a, MplErr *err) {
  CpuDev *cd = d->impl;
  int64_t need = mpl_ce_cpu_scratch(a);
  if (need <= cd->ce_cap) return MPL_OK;
  if (cd->ce_scratch) atomic_fetch_sub(&cpu_held, (int64_t)mpl_alloc_size(cd->ce_scratch));
  mpl_free(cd->ce_scratch);
  cd->ce_scratch = NULL;
  cd->ce_cap = 0;
  if (cpu_memory_check(d, (uint64_t)need * sizeof(float), "the fused cross-entropy's scratch", err) != MPL_OK)
    return MPL_ERR;
  if (!(cd->ce_scratch = mpl_malloc((size_t)need * sizeof(float))))
    return mpl_errf(err, "cpu: out of memory for the cross-entropy's chunk (%lld floats)", (long long)need);
  atomic_fetch_add(&cpu_held, (int64_t)mpl_alloc_size(cd->ce_scratch));
  cd->ce_cap = need;
  return MPL_OK;
}

static int cpu_ce(MplDevice *d, const MplCe *a, MplErr *err) {
  CpuDev *cd = d->impl;
  if (cpu_ce_reserve(d, a, err) != MPL_OK) return MPL_ERR;
  return mpl_ce_cpu(a, cd->ce_scratch, &cd->bf16, cpu_ce_rows, d, err);
}

/* An embedding's gradient over a block of columns: outer iterations are blocks of EMB_COLS
 * columns (contiguous in each row, so the additions vectorise), each zeroed, then every
 * position's dy added in position order: per element the additions of the definition, in
 * its order, whatever the split. A position whose idx is out of range would add 0 to the
 * clamped row, which changes nothing (a sum that starts at +0 is never -0), so it is skipped. */
enum { EMB_COLS = 64 };
static void emb_grad_cols(void **args, const int64_t *scalars, int64_t b, int64_t e) {
  (void)scalars;
  const MplEmbGrad *a = args[0];
  int64_t c0 = b * EMB_COLS, c1 = e * EMB_COLS < a->N ? e * EMB_COLS : a->N, w = c1 - c0;
  for (int64_t r = 0; r < a->K; r++) memset(a->out + r * a->N + c0, 0, sizeof(float) * (size_t)w);
  for (int64_t p = 0; p < a->M; p++) {
    int64_t t = a->idx[p];
    if (t < 0 || t >= a->K) continue;
    float *o = a->out + t * a->N + c0;
    const float *g = a->dy + p * a->N + c0;
    for (int64_t c = 0; c < w; c++) o[c] += g[c];
  }
}

static int cpu_emb_grad(MplDevice *d, const MplEmbGrad *a, MplErr *err) {
  void *args[1] = {(void *)a};
  return cpu_kernel(d, emb_grad_cols, args, NULL, (a->N + EMB_COLS - 1) / EMB_COLS, (a->M + a->K) * a->N, err);
}

static int cpu_accum_f32(MplDevice *d, float *acc, const float *src, int64_t n, MplErr *err) {
  for (int64_t i = 0; i < n; i++) acc[i] += src[i];
  return MPL_OK;
}

static int cpu_zero(MplDevice *d, void *dst, size_t bytes, MplErr *err) {
  memset(dst, 0, bytes);
  return MPL_OK;
}

static int cpu_copy(MplDevice *d, void *dst, const void *src, size_t bytes, MplErr *err) {
  if (bytes) memmove(dst, src, bytes);
  return MPL_OK;
}

/* height rows of width bytes (tp's parts of a value; the rows never overlap). */
static int cpu_copy_2d(MplDevice *d, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                       size_t height, MplErr *err) {
  for (size_t i = 0; i < height && width; i++) memcpy((uint8_t *)dst + i * dpitch, (const uint8_t *)src + i * spitch, width);
  return MPL_OK;
}

/* ---- the optimizer: optim.c's loops on the rank's memory ---------------------------- */

static int cpu_sumsq(MplDevice *d, const float *g, int64_t n, double *out, MplErr *err) {
  *out = mpl_sumsq_f64(g, n);
  return MPL_OK;
}

static int cpu_scale(MplDevice *d, float *g, int64_t n, float coef, MplErr *err) {
  mpl_scale_f32(g, n, coef);
  return MPL_OK;
}

static int cpu_sgd(MplDevice *d, float *p, const float *g, float *buf, int64_t n, double lr, double momentum,
                   bool first_step, MplErr *err) {
  mpl_sgd_update(p, g, buf, n, lr, momentum, first_step);
  return MPL_OK;
}

static int cpu_adamw(MplDevice *d, float *p, const float *g, float *m, float *v, int64_t n, double lr, double beta1,
                     double beta2, double eps, double weight_decay, int64_t t, MplErr *err) {
  mpl_adamw_update(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, t);
  return MPL_OK;
}

/* The multi-tensor forms: the loops above, one tensor after another (the update phase's
 * batching, update.c, runs on every backend through them). */
static int cpu_sumsq_list(MplDevice *d, const MplOptTensor *t, int k, MplErr *err) {
  for (int i = 0; i < k; i++) *t[i].out = mpl_sumsq_f64(t[i].g, t[i].n);
  return MPL_OK;
}

static int cpu_scale_list(MplDevice *d, const MplOptTensor *t, int k, float coef, MplErr *err) {
  for (int i = 0; i < k; i++) mpl_scale_f32(t[i].g, t[i].n, coef);
  return MPL_OK;
}

static int cpu_adamw_list(MplDevice *d, const MplOptTensor *t, int k, double lr, double beta1, double beta2,
                          double eps, int64_t step, MplErr *err) {
  for (int i = 0; i < k; i++)
    mpl_adamw_update(t[i].p, t[i].g, t[i].m, t[i].v, t[i].n, lr, beta1, beta2, eps, t[i].weight_decay, step);
  return MPL_OK;
}

static int cpu_sgd_list(MplDevice *d, const MplOptTensor *t, int k, double lr, double momentum, bool first_step,
                        MplErr *err) {
  for (int i = 0; i < k; i++) mpl_sgd_update(t[i].p, t[i].g, t[i].m, t[i].n, lr, momentum, first_step);
  return MPL_OK;
}

const MplDeviceOps mpl_device_cpu_ops = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .bind_thread = cpu_bind_thread,
    .arena_alloc = cpu_arena_alloc,
    .arena_zeroed = true,
    .arena_free = cpu_arena_free,
    .kernel = cpu_kernel,
    .gemm = cpu_gemm,
    .accum_f32 = cpu_accum_f32,
    .sdpa = cpu_sdpa,
    .sdpa_bwd = cpu_sdpa_bwd,
    .ce = cpu_ce,
    .ce_reserve = cpu_ce_reserve,
    .emb_grad = cpu_emb_grad,
    .zero = cpu_zero,
    .copy_to_host = cpu_copy,
    .copy_from_host = cpu_copy,
    .copy_device = cpu_copy,
    .copy_2d = cpu_copy_2d,
    .sumsq_f64 = cpu_sumsq,
    .scale_f32 = cpu_scale,
    .sgd = cpu_sgd,
    .adamw = cpu_adamw,
    .sumsq_f64_list = cpu_sumsq_list,
    .scale_f32_list = cpu_scale_list,
    .adamw_list = cpu_adamw_list,
    .sgd_list = cpu_sgd_list,
};

/* ---- the job's kernels: compiled by jit_cpu.c, looked up by name ------------------ */

int mpl_cpu_kernels_load(MplCpuKernels *k, const JobKernels *jk, MplErr *err) {
  memset(k, 0, sizeof *k);
  if (jk->nkernels == 0) return MPL_OK;
  if (!jk->llvm_bc || jk->llvm_bc_len == 0) return mpl_errf(err, "the job has %d kernels but no LLVM bitcode", jk->nkernels);
  char msg[400] = "";
  MplJit *jit = mpl_jit_load(jk->llvm_bc, jk->llvm_bc_len, msg, sizeof msg);
  if (!jit) return mpl_errf(err, "cpu: cannot compile the job's kernels: %s", msg);
  k->jit = jit;
  k->fn = mpl_calloc((size_t)jk->nkernels, sizeof *k->fn);
  if (!k->fn) {
    mpl_cpu_kernels_free(k);
    return mpl_errf(err, "out of memory");
  }
  k->n = jk->nkernels;
  for (int i = 0; i < jk->nkernels; i++) {
    void *addr = mpl_jit_lookup(jit, jk->names[i]);
    if (!addr) {
      int rc = mpl_errf(err, "cpu: kernel '%s' is not in the job's bitcode", jk->names[i]);
      mpl_cpu_kernels_free(k);
      return rc;
    }
    k->fn[i] = (MplKernelFn)addr;
    const char *prof = getenv("MPL_CPU_PROFILE");
    if (prof && *prof && *prof != '0') fprintf(stderr, "cpu profile: kernel %p is %s\n", addr, jk->names[i]);
  }
  return MPL_OK;
}

void mpl_cpu_kernels_free(MplCpuKernels *k) {
  mpl_free(k->fn);
  if (k->jit) mpl_jit_free(k->jit);
  k->fn = NULL;
  k->jit = NULL;
  k->n = 0;
}
