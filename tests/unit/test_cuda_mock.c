/*
 * test_cuda_mock.c — the cuda device's host code (runtime/device_cuda.c, device_cuda_progs.c)
 * run for real through its MplDeviceOps table on a machine without a GPU: libcudart, the
 * driver and cuBLAS are tests/unit/cuda_mock.c's (host memory, a reference product), NVRTC
 * is the real one, and each launch runs a host-compiled copy of its kernel
 * (cuda_mock_progs.c, cuda_mock_sdpa.c; the job's kernels: a hand-written pair below, in
 * the layout compiler/cg_cuda.c emits). Results are compared with the cpu device's:
 *
 *  - memory: copies to, from and within the device, 2-D copies and zeroing round-trip
 *    exactly; host pointers take the plain-copy path;
 *  - errors: a failed cudaMalloc at init or for an arena is an MPL_ERR with a message; a job
 *    whose PTX the driver refuses is compiled from its source, one without source reports
 *    the JIT's log, a missing kernel is named; each device frees all it made;
 *  - the optimizer (AdamW both lerp forms, with and without decay; SGD in its three modes;
 *    scaling; list forms): the cpu device's bits; sums of squares within 1e-12 relative of
 *    the cpu's, and the list form the single form's bits;
 *  - products: row-major C = alpha op(A) op(B) + beta C, every transpose, strided batches,
 *    f32 (and under --tf32), tf32, bf16 values in f32 and stored as bf16, against a float64
 *    reference (1e-6 of the sum of |terms|, tf32 2e-3), with the cuBLAS entry point and
 *    compute type each precision asks for; accum_f32 the bits of a float add;
 *  - the fused attention, forward and backward, causal or not, grouped-query heads, rows
 *    crossing a tile: f32 inputs on CUDA cores; bf16 inputs on tensor cores (16/16) and
 *    tensor-core forward with CUDA-core backward (48/24); within 4e-5 of the cpu's (bf16:
 *    out 2^-7, gradients 2e-4), relative to the largest element or 1;
 *  - the fused cross-entropy (f32, bf16, bf16 inputs; w [V, K] or [K, V]; a last block of
 *    fewer rows): within 4e-5 of the cpu's (bf16: 2^-6);
 *  - an embedding's gradient, indices out of range included: the cpu's bits;
 *  - the job's kernels from CUDA source (a plain and a warp-per-row kernel): the scalars and
 *    n_outer arrive, a thread (a warp) per iteration up to the cap of 32 blocks a SM, then
 *    grid-stride; MPL_PROFILE's table counts steps (step_done) and their launches, and its
 *    events are freed;
 *  - NVRTC once per program and architecture: a second request gets the first's PTX from
 *    the process's cache.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/device.h"
#include "runtime/mpl.h"

#ifdef MPL_HAVE_CUDA

#include <cublas_v2.h>

#include "cuda_host.h"
#include "cuda_mock.h"

/* ---- devices and buffers ------------------------------------------------------------------ */

static MplDevice open_device(const MplDeviceOps *ops, bool tf32) {
  MplDevice d = {.ops = ops, .tf32 = tf32};
  MplErr err = {{0}};
  ck_assert_msg(ops->init(&d, 0, 2, &err) == MPL_OK, "%s init: %s", ops->name, err.msg);
  return d;
}

/* The cuda device freed, and with it everything it made in the mock. */
static void close_cuda(MplDevice *d) {
  d->ops->free(d);
  ck_assert_msg(cuda_mock_live() == 0, "the cuda device left %d CUDA objects behind", cuda_mock_live());
}

/* A test's pair of devices freed, the cuda one checked for leaks. */
static void close_pair(MplDevice *cu, MplDevice *cpu) {
  cpu->ops->free(cpu);
  close_cuda(cu);
}

/* A device buffer of `bytes` holding host (NULL: left as it is) */
static void *dev_put(MplDevice *d, const void *host, size_t bytes) {
  MplErr err = {{0}};
  void *p = NULL;
  ck_assert_msg(d->ops->arena_alloc(d, bytes, &p, &err) == MPL_OK, "%s", err.msg);
  if (host) ck_assert_msg(d->ops->copy_from_host(d, p, host, bytes, &err) == MPL_OK, "%s", err.msg);
  return p;
}

static void dev_get(MplDevice *d, void *host, const void *dev, size_t bytes) {
  MplErr err = {{0}};
  ck_assert_msg(d->ops->copy_to_host(d, host, dev, bytes, &err) == MPL_OK, "%s", err.msg);
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double uniform(void) { /* [-1, 1) */
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}
static float *random_f32(int64_t n, double scale) {
  float *x = malloc(sizeof *x * (size_t)(n ? n : 1));
  ck_assert(x);
  for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * uniform());
  return x;
}
static uint16_t bf16_bits(float x) { /* x holds a bf16 value */
  uint32_t u;
  memcpy(&u, &x, 4);
  return (uint16_t)(u >> 16);
}
static void round_to_bf16(float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = (float)host_round_bf16(x[i]);
}
static uint16_t *bf16_copy(const float *x, int64_t n) {
  uint16_t *h = malloc(2 * (size_t)n);
  ck_assert(h);
  for (int64_t i = 0; i < n; i++) h[i] = bf16_bits(x[i]);
  return h;
}

static void same_bits(const float *got, const float *want, int64_t n, const char *what) {
  for (int64_t i = 0; i < n; i++)
    ck_assert_msg(!memcmp(&got[i], &want[i], 4), "%s[%lld]: cuda %.9g, cpu %.9g", what, (long long)i, got[i], want[i]);
}

/* max |got - want| over max(1, max |want|) */
static double rel_err(const float *got, const float *want, int64_t n) {
  double e = 0, m = 1;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - want[i]);
    e = d > e || isnan(d) ? d : e;
    m = fabs(want[i]) > m ? fabs(want[i]) : m;
  }
  return e / m;
}

/* ---- memory --------------------------------------------------------------------------------- */

START_TEST(test_memory) {
  MplDevice d = open_device(&mpl_device_cuda_ops, false);
  MplErr err = {{0}};
  enum { N = 3000 };
  float *x = random_f32(N, 1), *y = malloc(4 * N);
  float *a = dev_put(&d, x, 4 * N), *b = dev_put(&d, NULL, 4 * N);
  ck_assert(d.ops->copy_device(&d, b, a, 4 * N, &err) == MPL_OK);
  dev_get(&d, y, b, 4 * N);
  ck_assert(!memcmp(x, y, 4 * N));
  /* rows 10 .. 19 of 100 floats, 40 of them each, from a to b's rows 0 .. 9 at pitch 50 */
  ck_assert(d.ops->zero(&d, b, 4 * N, &err) == MPL_OK);
  ck_assert(d.ops->copy_2d(&d, b, 200, a + 1000, 400, 160, 10, &err) == MPL_OK);
  dev_get(&d, y, b, 4 * N);
  for (int i = 0; i < N; i++) {
    int row = i / 50, col = i % 50;
    float want = row < 10 && col < 40 ? x[1000 + 100 * row + col] : 0.0f;
    ck_assert_msg(!memcmp(&y[i], &want, 4), "copy_2d: element %d: %g, want %g", i, y[i], want);
  }
  /* host memory on both sides: a plain copy */
  float h = 0;
  ck_assert(d.ops->copy_to_host(&d, &h, &x[7], 4, &err) == MPL_OK && h == x[7]);
  ck_assert(d.ops->copy_from_host(&d, &h, &x[8], 4, &err) == MPL_OK && h == x[8]);
  ck_assert_msg(d.ops->sync(&d, &err) == MPL_OK, "%s", err.msg);
  d.ops->arena_free(&d, a);
  d.ops->arena_free(&d, b);
  close_cuda(&d);
  free(x), free(y);
}
END_TEST

START_TEST(test_alloc_failure) {
  MplErr err = {{0}};
  cuda_mock_fail_alloc(0); /* init's first allocation: the optimizer's partial sums */
  MplDevice d = {.ops = &mpl_device_cuda_ops};
  ck_assert_int_eq(d.ops->init(&d, 0, 1, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "cudaMalloc") && strstr(err.msg, "out of memory"), "init: %s", err.msg);
  close_cuda(&d);

  d = open_device(&mpl_device_cuda_ops, false);
  cuda_mock_fail_alloc(0);
  void *p = (void *)1;
  err = (MplErr){{0}};
  ck_assert_int_eq(d.ops->arena_alloc(&d, 1 << 20, &p, &err), MPL_ERR);
  ck_assert_msg(p == NULL && strstr(err.msg, "cannot allocate the arena of 1048576 bytes"), "arena: %s", err.msg);
  ck_assert_msg(d.ops->sync(&d, &err) == MPL_OK, "the failure stays behind: %s", err.msg);
  close_cuda(&d);
}
END_TEST

/* ---- the optimizer --------------------------------------------------------------------------- */

typedef struct OptBufs {
  int64_t n;
  float *p, *g, *m, *v;     /* the cpu's (host) */
  float *dp, *dg, *dm, *dv; /* the cuda device's */
} OptBufs;

static OptBufs opt_bufs(MplDevice *d, int64_t n) {
  OptBufs b = {.n = n, .p = random_f32(n, 1), .g = random_f32(n, 0.1), .m = random_f32(n, 0.01), .v = random_f32(n, 0.001)};
  for (int64_t i = 0; i < n; i++) b.v[i] = fabsf(b.v[i]);
  b.dp = dev_put(d, b.p, 4 * n), b.dg = dev_put(d, b.g, 4 * n), b.dm = dev_put(d, b.m, 4 * n);
  b.dv = dev_put(d, b.v, 4 * n);
  return b;
}

/* A new gradient on both sides. */
static void opt_new_grad(MplDevice *d, OptBufs *b) {
  MplErr err = {{0}};
  for (int64_t i = 0; i < b->n; i++) b->g[i] = (float)(0.1 * uniform());
  ck_assert(d->ops->copy_from_host(d, b->dg, b->g, 4 * b->n, &err) == MPL_OK);
}

static void opt_same(MplDevice *d, const OptBufs *b, const char *what) {
  float *h = malloc(4 * b->n);
  const float *const want[] = {b->p, b->m, b->v, b->g};
  float *const got[] = {b->dp, b->dm, b->dv, b->dg};
  for (int k = 0; k < 4; k++) {
    char name[64];
    snprintf(name, sizeof name, "%s: %c", what, "pmvg"[k]);
    dev_get(d, h, got[k], 4 * b->n);
    same_bits(h, want[k], b->n, name);
  }
  free(h);
}

static void opt_free(MplDevice *d, OptBufs *b) {
  d->ops->arena_free(d, b->dp), d->ops->arena_free(d, b->dg), d->ops->arena_free(d, b->dm), d->ops->arena_free(d, b->dv);
  free(b->p), free(b->g), free(b->m), free(b->v);
}

/* AdamW (beta1 0.9: lerp's small form, 0.3: the other; decay or none), SGD in its modes and
 * scaling, the same calls on both devices, several steps: the same bits. 9000 elements
 * need more blocks than the mock GPU's cap of 32: the kernels go grid-stride. */
START_TEST(test_optim_single) {
  MplDevice cu = open_device(&mpl_device_cuda_ops, false), cpu = open_device(&mpl_device_cpu_ops, false);
  MplErr err = {{0}};
  const int64_t sizes[] = {1, 9000};
  for (int s = 0; s < 2; s++) {
    OptBufs b = opt_bufs(&cu, sizes[s]);
    int64_t n = b.n;
    for (int t = 1; t <= 3; t++) {
      double beta1 = t == 2 ? 0.3 : 0.9, wd = t == 3 ? 0.0 : 0.05;
      opt_new_grad(&cu, &b);
      ck_assert(cpu.ops->adamw(&cpu, b.p, b.g, b.m, b.v, n, 1e-2, beta1, 0.999, 1e-8, wd, t, &err) == MPL_OK);
      ck_assert_msg(cu.ops->adamw(&cu, b.dp, b.dg, b.dm, b.dv, n, 1e-2, beta1, 0.999, 1e-8, wd, t, &err) == MPL_OK, "%s",
                    err.msg);
      opt_same(&cu, &b, "adamw");
    }
    for (int mode = 0; mode < 4; mode++) { /* momentum 0; the first step; later steps; no buffer */
      double mom = mode == 0 ? 0.0 : 0.9;
      bool first = mode == 1;
      float *buf = mode == 3 ? NULL : b.m, *dbuf = mode == 3 ? NULL : b.dm;
      opt_new_grad(&cu, &b);
      ck_assert(cpu.ops->sgd(&cpu, b.p, b.g, buf, n, 0.05, mom, first, &err) == MPL_OK);
      ck_assert_msg(cu.ops->sgd(&cu, b.dp, b.dg, dbuf, n, 0.05, mom, first, &err) == MPL_OK, "%s", err.msg);
      opt_same(&cu, &b, "sgd");
    }
    ck_assert(cpu.ops->scale_f32(&cpu, b.g, n, 0.37f, &err) == MPL_OK);
    ck_assert_msg(cu.ops->scale_f32(&cu, b.dg, n, 0.37f, &err) == MPL_OK, "%s", err.msg);
    opt_same(&cu, &b, "scale");
    opt_free(&cu, &b);
  }
  close_pair(&cu, &cpu);
}
END_TEST

/* The sum of squares (70000 elements: 18 blocks of partial sums) within 1e-12 of the cpu's. */
static double cuda_sumsq(MplDevice *d, const float *dg, int64_t n) {
  MplErr err = {{0}};
  double *out = dev_put(d, NULL, 8), s = 0;
  ck_assert_msg(d->ops->sumsq_f64(d, dg, n, out, &err) == MPL_OK, "%s", err.msg);
  dev_get(d, &s, out, 8);
  d->ops->arena_free(d, out);
  return s;
}

START_TEST(test_optim_sumsq) {
  MplDevice cu = open_device(&mpl_device_cuda_ops, false), cpu = open_device(&mpl_device_cpu_ops, false);
  MplErr err = {{0}};
  const int64_t n = 70000;
  float *g = random_f32(n, 3);
  float *dg = dev_put(&cu, g, 4 * n);
  double *out = dev_put(&cpu, NULL, 8), want = 0;
  ck_assert(cpu.ops->sumsq_f64(&cpu, g, n, out, &err) == MPL_OK);
  dev_get(&cpu, &want, out, 8);
  double got = cuda_sumsq(&cu, dg, n);
  ck_assert_msg(fabs(got - want) <= 1e-12 * want, "sumsq: cuda %.17g, cpu %.17g", got, want);
  cu.ops->arena_free(&cu, dg);
  cpu.ops->arena_free(&cpu, out);
  free(g);
  close_pair(&cu, &cpu);
}
END_TEST

/* The list forms over three tensors (one above the block cap, weight decays that differ,
 * SGD with a tensor without a buffer): each tensor the bits the cpu's single op gives it;
 * the sums of squares the cuda single form's bits. */
START_TEST(test_optim_lists) {
  MplDevice cu = open_device(&mpl_device_cuda_ops, false), cpu = open_device(&mpl_device_cpu_ops, false);
  MplErr err = {{0}};
  enum { K = 3 };
  const int64_t sizes[K] = {600, 3, 9000};
  const double wd[K] = {0.05, 0.0, 0.2};
  OptBufs b[K];
  MplOptTensor t[K], tg[K]; /* the updates'; the norm's and the clip's (g only: update.c's) */
  double *outs = dev_put(&cu, NULL, 8 * K);
  for (int i = 0; i < K; i++) {
    b[i] = opt_bufs(&cu, sizes[i]);
    t[i] = (MplOptTensor){.p = b[i].dp, .g = b[i].dg, .m = b[i].dm, .v = b[i].dv, .n = sizes[i], .weight_decay = wd[i]};
    tg[i] = (MplOptTensor){.g = b[i].dg, .out = outs + i, .n = sizes[i]};
  }
  for (int step = 1; step <= 2; step++) {
    for (int i = 0; i < K; i++) {
      opt_new_grad(&cu, &b[i]);
      ck_assert(cpu.ops->adamw(&cpu, b[i].p, b[i].g, b[i].m, b[i].v, b[i].n, 1e-2, 0.9, 0.99, 1e-8, wd[i], step, &err) ==
                MPL_OK);
    }
    ck_assert_msg(cu.ops->adamw_list(&cu, t, K, 1e-2, 0.9, 0.99, 1e-8, step, &err) == MPL_OK, "%s", err.msg);
    for (int i = 0; i < K; i++) opt_same(&cu, &b[i], "adamw_list");
  }
  t[1].m = NULL; /* no momentum buffer */
  for (int step = 1; step <= 2; step++) {
    for (int i = 0; i < K; i++) {
      opt_new_grad(&cu, &b[i]);
      ck_assert(cpu.ops->sgd(&cpu, b[i].p, b[i].g, i == 1 ? NULL : b[i].m, b[i].n, 0.05, 0.9, step == 1, &err) == MPL_OK);
    }
    ck_assert_msg(cu.ops->sgd_list(&cu, t, K, 0.05, 0.9, step == 1, &err) == MPL_OK, "%s", err.msg);
    for (int i = 0; i < K; i++) opt_same(&cu, &b[i], "sgd_list");
  }
  for (int i = 0; i < K; i++) ck_assert(cpu.ops->scale_f32(&cpu, b[i].g, b[i].n, 0.61f, &err) == MPL_OK);
  ck_assert_msg(cu.ops->scale_f32_list(&cu, tg, K, 0.61f, &err) == MPL_OK, "%s", err.msg);
  for (int i = 0; i < K; i++) opt_same(&cu, &b[i], "scale_list");
  ck_assert_msg(cu.ops->sumsq_f64_list(&cu, tg, K, &err) == MPL_OK, "%s", err.msg);
  double got[K];
  dev_get(&cu, got, outs, sizeof got);
  for (int i = 0; i < K; i++) {
    double single = cuda_sumsq(&cu, b[i].dg, b[i].n);
    ck_assert_msg(!memcmp(&got[i], &single, 8), "sumsq_list[%d]: %.17g, single %.17g", i, got[i], single);
    opt_free(&cu, &b[i]);
  }
  cu.ops->arena_free(&cu, outs);
  close_pair(&cu, &cpu);
}
END_TEST

/* Sums of squares whose order shows (pass 99: values within a binade or two sum exactly in
 * any order, so a single launch whose parts were floor(n / 4096), not the list's ceiling,
 * still gave the list's bits): gradients spread over 61 binades, (1 + u) 2^(i % 61 - 30);
 * a list of three tensors whose parts (1200 and more) pass the 1024 a single launch has
 * (the partial sums' buffer is sized for the list); each listed sum the single launch's
 * bits, and within 1e-12 of the cpu's. */
START_TEST(test_optim_sumsq_order) {
  MplDevice cu = open_device(&mpl_device_cuda_ops, false), cpu = open_device(&mpl_device_cpu_ops, false);
  MplErr err = {{0}};
  enum { K = 3 };
  const int64_t sizes[K] = {9000, 600 * 4096, 600 * 4096 + 5};
  float *dg[K];
  MplOptTensor tg[K];
  double *outs = dev_put(&cu, NULL, 8 * K), want[K];
  for (int i = 0; i < K; i++) {
    float *g = malloc(4 * (size_t)sizes[i]);
    for (int64_t j = 0; j < sizes[i]; j++) g[j] = ldexpf(1.0f + 0.5f * (float)(uniform() + 1), (int)(j % 61) - 30);
    dg[i] = dev_put(&cu, g, 4 * (size_t)sizes[i]);
    double *out = dev_put(&cpu, NULL, 8);
    ck_assert(cpu.ops->sumsq_f64(&cpu, g, sizes[i], out, &err) == MPL_OK);
    dev_get(&cpu, &want[i], out, 8);
    cpu.ops->arena_free(&cpu, out);
    free(g);
    tg[i] = (MplOptTensor){.g = dg[i], .out = outs + i, .n = sizes[i]};
  }
  ck_assert_msg(cu.ops->sumsq_f64_list(&cu, tg, K, &err) == MPL_OK, "%s", err.msg);
  double got[K];
  dev_get(&cu, got, outs, sizeof got);
  for (int i = 0; i < K; i++) {
    double single = cuda_sumsq(&cu, dg[i], sizes[i]);
    ck_assert_msg(!memcmp(&got[i], &single, 8), "n %lld: sumsq_list %.17g, single %.17g", (long long)sizes[i], got[i],
                  single);
    ck_assert_msg(fabs(got[i] - want[i]) <= 1e-12 * want[i], "n %lld: cuda %.17g, cpu %.17g", (long long)sizes[i],
                  got[i], want[i]);
    cu.ops->arena_free(&cu, dg[i]);
  }
  cu.ops->arena_free(&cu, outs);
  close_pair(&cu, &cpu);
}
END_TEST

/* ---- products ------------------------------------------------------------------------------- */

typedef struct GemmCase {
  int64_t M, N, K, batch;
  bool ta, tb;
  uint8_t prec;
  bool in16, tf32; /* operands stored as bf16; the device made with --tf32 */
  const char *fn;  /* the cuBLAS entry point and compute type it must take */
  int compute, math;
} GemmCase;

static const GemmCase gemm_cases[] = {
    {5, 7, 3, 1, false, false, PREC_F32, false, false, "sgemm", CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH},
    {5, 7, 3, 1, true, false, PREC_F32, false, false, "sgemm", CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH},
    {5, 7, 3, 1, false, true, PREC_F32, false, false, "sgemm", CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH},
    {4, 6, 9, 3, true, true, PREC_F32, false, false, "sgemm_strided", CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH},
    {6, 5, 8, 1, false, true, PREC_F32, false, true, "sgemm", CUBLAS_COMPUTE_32F, CUBLAS_TF32_TENSOR_OP_MATH},
    {5, 7, 3, 1, false, true, PREC_TF32, false, false, "gemm_ex", CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_DEFAULT_MATH},
    {4, 6, 9, 2, true, false, PREC_TF32, false, false, "gemm_strided_ex", CUBLAS_COMPUTE_32F_FAST_TF32,
     CUBLAS_DEFAULT_MATH},
    {5, 7, 3, 1, true, true, PREC_BF16, false, false, "gemm_ex", CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_DEFAULT_MATH},
    {3, 8, 5, 1, false, false, PREC_BF16, true, false, "gemm_ex", CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH},
    {3, 8, 5, 2, false, true, PREC_BF16, true, false, "gemm_strided_ex", CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH},
};

/* op(X)[i, l] of a row-major X holding rows x cols = (t ? cols x rows) */
static double op_at(const float *x, bool t, int64_t rows, int64_t cols, int64_t i, int64_t l) {
  return t ? x[l * rows + i] : x[i * cols + l];
}

/* Case ci on device d (made with the case's tf32). */
static void check_gemm(MplDevice *d, int ci) {
  const GemmCase *c = &gemm_cases[ci];
  MplErr err = {{0}};
  /* batches apart by a gap of 3 elements */
  int64_t sa = c->M * c->K + 3, sb = c->K * c->N + 3, sc = c->M * c->N + 3, nb = c->batch;
  float *a = random_f32(sa * nb, 1), *b = random_f32(sb * nb, 1), *c0 = random_f32(sc * nb, 1), *got = malloc(4 * sc * nb);
  if (c->prec == PREC_BF16) round_to_bf16(a, sa * nb), round_to_bf16(b, sb * nb);
  JobStep s = {.M = c->M, .N = c->N, .K = c->K, .batch = nb, .ta = c->ta, .tb = c->tb, .stride_a = sa, .stride_b = sb,
               .stride_c = sc, .alpha = 1.5, .beta = 0.5, .prec = c->prec, .in16 = c->in16};
  uint16_t *a16 = bf16_copy(a, sa * nb), *b16 = bf16_copy(b, sb * nb);
  size_t es = c->in16 ? 2 : 4;
  void *da = dev_put(d, c->in16 ? (void *)a16 : a, es * sa * nb), *db = dev_put(d, c->in16 ? (void *)b16 : b, es * sb * nb);
  float *dc = dev_put(d, c0, 4 * sc * nb);
  ck_assert_msg(d->ops->gemm(d, &s, da, db, dc, &err) == MPL_OK, "case %d: %s", ci, err.msg);
  dev_get(d, got, dc, 4 * sc * nb);
  MockGemm g = cuda_mock_last_gemm();
  ck_assert_msg(!strcmp(g.fn, c->fn) && g.compute == c->compute && g.math_mode == c->math && g.batch == nb,
                "case %d: cuBLAS %s compute %d math %d batch %d; want %s %d %d", ci, g.fn, g.compute, g.math_mode,
                g.batch, c->fn, c->compute, c->math);
  double tol = c->prec == PREC_TF32 || c->tf32 ? 2e-3 : 1e-6;
  for (int64_t k = 0; k < nb; k++)
    for (int64_t i = 0; i < c->M; i++)
      for (int64_t j = 0; j < c->N; j++) {
        double acc = 0, mag = 0;
        for (int64_t l = 0; l < c->K; l++) {
          double t = op_at(a + k * sa, c->ta, c->M, c->K, i, l) * op_at(b + k * sb, c->tb, c->K, c->N, l, j);
          acc += t, mag += fabs(t);
        }
        int64_t at = k * sc + i * c->N + j;
        double want = 1.5 * acc + 0.5 * c0[at];
        ck_assert_msg(fabs(got[at] - want) <= tol * (1.5 * mag + 0.5 * fabs(c0[at])) + 1e-30,
                      "case %d batch %lld C[%lld, %lld] = %g, want %g", ci, (long long)k, (long long)i, (long long)j,
                      got[at], want);
      }
  for (int64_t k = 0; k < nb; k++) /* the gaps between batches untouched */
    for (int64_t e = c->M * c->N; e < sc; e++) ck_assert(!memcmp(&got[k * sc + e], &c0[k * sc + e], 4));
  d->ops->arena_free(d, da), d->ops->arena_free(d, db), d->ops->arena_free(d, dc);
  free(a), free(b), free(c0), free(got), free(a16), free(b16);
}

START_TEST(test_gemm) {
  for (int tf32 = 0; tf32 < 2; tf32++) {
    MplDevice d = open_device(&mpl_device_cuda_ops, tf32);
    for (int ci = 0; ci < (int)(sizeof gemm_cases / sizeof gemm_cases[0]); ci++)
      if (gemm_cases[ci].tf32 == tf32) check_gemm(&d, ci);
    close_cuda(&d);
  }
}
END_TEST

START_TEST(test_accum) {
  MplDevice d = open_device(&mpl_device_cuda_ops, false);
  MplErr err = {{0}};
  enum { N = 777 };
  float *acc = random_f32(N, 1), *src = random_f32(N, 1e-3), *got = malloc(4 * N);
  float *dacc = dev_put(&d, acc, 4 * N), *dsrc = dev_put(&d, src, 4 * N);
  ck_assert_msg(d.ops->accum_f32(&d, dacc, dsrc, N, &err) == MPL_OK, "%s", err.msg);
  dev_get(&d, got, dacc, 4 * N);
  for (int i = 0; i < N; i++) acc[i] += src[i];
  same_bits(got, acc, N, "accum_f32");
  d.ops->arena_free(&d, dacc), d.ops->arena_free(&d, dsrc);
  close_cuda(&d);
  free(acc), free(src), free(got);
}
END_TEST

/* ---- the fused attention ------------------------------------------------------------------------ */

/* Registers build b's host kernels under the PTX the device will compile for it. */
static void register_sdpa(const MockSdpaBuild *b) {
  MplErr err = {{0}};
  char *ptx = NULL, log[1024];
  ck_assert_msg(mpl_cuda_sdpa_compile("compute_90", b->hs, b->hv, b->in16, &ptx, log, sizeof log, &err) == MPL_OK,
                "%s", err.msg);
  cuda_mock_add_kernels(b->k, b->n, ptx);
  mpl_free(ptx);
}

typedef struct SdpaBufs {
  float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv;
  uint16_t *q16, *k16, *v16, *out16, *dout16;
} SdpaBufs;

/* The MplSdpa of a, its tensors on device d (copied from host h, or left for outputs). */
static MplSdpa sdpa_on(MplDevice *d, const MplSdpa *a, const SdpaBufs *h, bool cuda) {
  MplSdpa x = *a;
  int64_t nq = a->B * a->H * a->T, nkv = a->B * a->Hkv * a->S;
  if (!cuda) {
    x.q = h->q, x.k = h->k, x.v = h->v, x.dout = h->dout, x.q16 = h->q16, x.k16 = h->k16, x.v16 = h->v16;
    x.out16 = h->out16, x.dout16 = h->dout16;
    x.out = malloc(4 * nq * a->hv), x.lse = malloc(4 * nq), x.dq = malloc(4 * nq * a->hs);
    x.dk = malloc(4 * nkv * a->hs), x.dv = malloc(4 * nkv * a->hv);
    return x;
  }
  if (a->in16) {
    x.q16 = dev_put(d, h->q16, 2 * nq * a->hs), x.k16 = dev_put(d, h->k16, 2 * nkv * a->hs);
    x.v16 = dev_put(d, h->v16, 2 * nkv * a->hv), x.dout16 = dev_put(d, h->dout16, 2 * nq * a->hv);
  } else {
    x.q = dev_put(d, h->q, 4 * nq * a->hs), x.k = dev_put(d, h->k, 4 * nkv * a->hs);
    x.v = dev_put(d, h->v, 4 * nkv * a->hv), x.dout = dev_put(d, h->dout, 4 * nq * a->hv);
  }
  x.out = dev_put(d, NULL, 4 * nq * a->hv), x.lse = dev_put(d, NULL, 4 * nq), x.dq = dev_put(d, NULL, 4 * nq * a->hs);
  x.dk = dev_put(d, NULL, 4 * nkv * a->hs), x.dv = dev_put(d, NULL, 4 * nkv * a->hv);
  return x;
}

/* What sdpa_on made on the cuda device (g) and the cpu (c), and the host inputs h. */
static void sdpa_free(MplDevice *cu, const MplSdpa *g, const MplSdpa *c, const SdpaBufs *h) {
  const void *const bufs[] = {g->q,    g->k,     g->v,   g->dout, g->q16, g->k16, g->v16,
                              g->out16, g->dout16, g->out, g->lse,  g->dq,  g->dk,  g->dv};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) cu->ops->arena_free(cu, (void *)bufs[i]);
  free(c->out), free(c->lse), free(c->dq), free(c->dk), free(c->dv);
  free(h->q), free(h->k), free(h->v), free(h->dout), free(h->q16), free(h->k16), free(h->v16), free(h->out16);
  free(h->dout16);
}

/* Device tensor `dev` of n floats against the cpu's `want`. */
static void sdpa_compare(MplDevice *d, const float *dev, const float *want, int64_t n, double tol, const char *what,
                         const MplSdpa *a) {
  float *got = malloc(4 * n);
  dev_get(d, got, dev, 4 * n);
  double e = rel_err(got, want, n);
  ck_assert_msg(e <= tol, "sdpa hs %lld hv %lld%s%s: %s off by %g (tolerance %g)", (long long)a->hs, (long long)a->hv,
                a->in16 ? " bf16 inputs" : "", a->causal ? " causal" : "", what, e, tol);
  free(got);
}

/* Build _i's kernels: B 2, H 2 over 1 kv head, T = S = 70 (a second tile of 6 rows),
 * causal and not; forward and backward against the cpu device, whose forward's out and
 * lse both backwards read. The launches show which kernels ran. _i past the builds: the
 * first build with the keys' gradients in two kernels, under MPL_SDPA_TC=split; then the
 * first f32 build (with tensor-core kernels) in a tf32 step (tf32 operands: within 2e-3),
 * in an f32 step under mplrun --tf32 (the same), and in a bf16 step under --tf32 (f32
 * inputs: --no-bf16-storage), which stays on the CUDA cores, whose bf16 rounding it needs.
 * An f32 build's own case is an f32 step: each product as three tf32 ones (within 4e-5); the
 * last case an f32 step under MPL_SDPA_TC=0 (the CUDA cores). */
START_TEST(test_sdpa) {
  int b = _i, extra = _i - cuda_mock_nsdpa;
  bool split = extra == 0, tf32_step = extra == 1, tf32_dev = extra == 2 || extra == 3, bf16_f32 = extra == 3;
  bool cores = extra == 4;
  if (cores) setenv("MPL_SDPA_TC", "0", 1);
  if (split) {
    for (b = 0; b < cuda_mock_nsdpa && cuda_mock_sdpa[b].n < 8; b++) {}
    ck_assert_msg(b < cuda_mock_nsdpa, "no build has the split tensor-core backward");
    setenv("MPL_SDPA_TC", "split", 1);
  }
  if (extra >= 1) {
    for (b = 0; b < cuda_mock_nsdpa && (cuda_mock_sdpa[b].in16 || cuda_mock_sdpa[b].n < 7); b++) {}
    ck_assert_msg(b < cuda_mock_nsdpa, "no f32 build has the tensor-core kernels");
  }
  const MockSdpaBuild *build = &cuda_mock_sdpa[b];
  bool tf32 = (tf32_step || tf32_dev) && !bf16_f32; /* tensor cores with tf32 operands */
  register_sdpa(build);
  MplDevice cu = open_device(&mpl_device_cuda_ops, tf32_dev), cpu = open_device(&mpl_device_cpu_ops, false);
  MplErr err = {{0}};
  for (int causal = 0; causal < 2; causal++) {
    MplSdpa a = {.B = 2, .H = 2, .Hkv = 1, .T = 70, .S = 70, .hs = build->hs, .hv = build->hv,
                 .scale = (float)(1 / sqrt((double)build->hs)), .causal = causal, .bf16 = build->in16 || bf16_f32,
                 .tf32 = tf32_step, .in16 = build->in16};
    int64_t nq = a.B * a.H * a.T, nkv = a.B * a.Hkv * a.S;
    SdpaBufs h = {.q = random_f32(nq * a.hs, 1), .k = random_f32(nkv * a.hs, 1), .v = random_f32(nkv * a.hv, 1),
                  .dout = random_f32(nq * a.hv, 1)};
    if (a.in16) {
      round_to_bf16(h.q, nq * a.hs), round_to_bf16(h.k, nkv * a.hs), round_to_bf16(h.v, nkv * a.hv);
      round_to_bf16(h.dout, nq * a.hv);
      h.q16 = bf16_copy(h.q, nq * a.hs), h.k16 = bf16_copy(h.k, nkv * a.hs), h.v16 = bf16_copy(h.v, nkv * a.hv);
      h.dout16 = bf16_copy(h.dout, nq * a.hv);
    }
    MplSdpa c = sdpa_on(&cpu, &a, &h, false), g = sdpa_on(&cu, &a, &h, true);
    ck_assert_msg(cpu.ops->sdpa(&cpu, &c, &err) == MPL_OK, "%s", err.msg);
    ck_assert_msg(cu.ops->sdpa(&cu, &g, &err) == MPL_OK, "%s", err.msg);
    /* (bf16 out: the GPU's key tiles are not the CPU's, so its running maxima differ) */
    sdpa_compare(&cu, g.out, c.out, nq * a.hv, a.bf16 ? 1.0 / 128 : tf32 ? 2e-3 : 4e-5, "out", &a);
    sdpa_compare(&cu, g.lse, c.lse, nq, a.bf16 ? 1e-4 : tf32 ? 2e-3 : 4e-5, "lse", &a);
    /* the backward from the cpu's out and lse on both */
    if (a.in16) {
      round_to_bf16(c.out, nq * a.hv);
      h.out16 = bf16_copy(c.out, nq * a.hv);
      c.out16 = h.out16;
      g.out16 = dev_put(&cu, h.out16, 2 * nq * a.hv);
    } else {
      ck_assert(cu.ops->copy_from_host(&cu, g.out, c.out, 4 * nq * a.hv, &err) == MPL_OK);
    }
    ck_assert(cu.ops->copy_from_host(&cu, g.lse, c.lse, 4 * nq, &err) == MPL_OK);
    ck_assert_msg(cpu.ops->sdpa_bwd(&cpu, &c, &err) == MPL_OK, "%s", err.msg);
    ck_assert_msg(cu.ops->sdpa_bwd(&cu, &g, &err) == MPL_OK, "%s", err.msg);
    double tol = a.bf16 ? 2e-4 : tf32 ? 2e-3 : 4e-5;
    sdpa_compare(&cu, g.dq, c.dq, nq * a.hs, tol, "dq", &a);
    sdpa_compare(&cu, g.dk, c.dk, nkv * a.hs, tol, "dk", &a);
    sdpa_compare(&cu, g.dv, c.dv, nkv * a.hv, tol, "dv", &a);
    sdpa_free(&cu, &g, &c, &h);
  }
  /* which kernels ran, twice each: tensor cores where the build has them: bf16 inputs; f32
     ones with tf32 operands in a tf32 step (or under --tf32), as three tf32 products (x3) in
     an f32 step; a bf16 step's f32 inputs on the CUDA cores */
  bool tc_fwd = build->n > 3 && (build->in16 || tf32), tc_bwd = build->n > 4 && (build->in16 || tf32);
  bool x3 = !build->in16 && !tf32 && !bf16_f32 && !cores && build->n >= 11;
  ck_assert(!bf16_f32 || !tc_fwd);
  split = split || (tc_bwd && !build->in16); /* (f32 inputs: dk and dv in two kernels only) */
  const char *ran[] = {x3 ? "mpl_sdpa_fwd_x3" : tc_fwd ? "mpl_sdpa_fwd_tc" : "mpl_sdpa_fwd",
                       x3 ? "mpl_sdpa_bwd_q_x3" : tc_bwd ? "mpl_sdpa_bwd_q_tc" : "mpl_sdpa_bwd_q",
                       x3 ? "mpl_sdpa_bwd_dk_x3" : !tc_bwd ? "mpl_sdpa_bwd_kv" : split ? "mpl_sdpa_bwd_dk_tc" : "mpl_sdpa_bwd_kv_tc",
                       x3 ? "mpl_sdpa_bwd_dv_x3" : split ? "mpl_sdpa_bwd_dv_tc" : NULL};
  const char *all[] = {"mpl_sdpa_fwd",       "mpl_sdpa_bwd_q",     "mpl_sdpa_bwd_kv",    "mpl_sdpa_fwd_tc",
                       "mpl_sdpa_bwd_q_tc",  "mpl_sdpa_bwd_kv_tc", "mpl_sdpa_bwd_dk_tc", "mpl_sdpa_bwd_dv_tc",
                       "mpl_sdpa_fwd_x3",    "mpl_sdpa_bwd_q_x3",  "mpl_sdpa_bwd_dk_x3", "mpl_sdpa_bwd_dv_x3"};
  for (int i = 0; i < 12; i++) {
    bool want = false;
    for (int j = 0; j < 4; j++) want = want || (ran[j] && !strcmp(ran[j], all[i]));
    ck_assert_msg(cuda_mock_launches(all[i]) == (want ? 2 : 0), "%s: %ld launches (want %d)", all[i],
                  cuda_mock_launches(all[i]), want ? 2 : 0);
  }
  unsetenv("MPL_SDPA_TC");
  close_pair(&cu, &cpu);
}
END_TEST

/* One device, one pair of head sizes (16/16), f32 inputs and then bf16 ones (in16): each
 * forward against the cpu's, and the second ran the bf16 build's kernels (pass 99: the
 * device's cache of builds keyed by the head sizes alone would run the f32 build on bf16
 * buffers, and no test ran both on one device). */
START_TEST(test_sdpa_builds_apart) {
  int f32b = -1, b16 = -1;
  for (int i = 0; i < cuda_mock_nsdpa; i++)
    if (cuda_mock_sdpa[i].hs == 16 && cuda_mock_sdpa[i].hv == 16) *(cuda_mock_sdpa[i].in16 ? &b16 : &f32b) = i;
  ck_assert(f32b >= 0 && b16 >= 0);
  register_sdpa(&cuda_mock_sdpa[f32b]), register_sdpa(&cuda_mock_sdpa[b16]);
  MplDevice cu = open_device(&mpl_device_cuda_ops, false), cpu = open_device(&mpl_device_cpu_ops, false);
  MplErr err = {{0}};
  for (int in16 = 0; in16 < 2; in16++) {
    MplSdpa a = {.B = 1, .H = 2, .Hkv = 2, .T = 20, .S = 20, .hs = 16, .hv = 16, .scale = 0.25f, .bf16 = in16,
                 .in16 = in16};
    int64_t n = a.B * a.H * a.T * 16;
    SdpaBufs h = {.q = random_f32(n, 1), .k = random_f32(n, 1), .v = random_f32(n, 1), .dout = random_f32(n, 1)};
    if (in16) {
      round_to_bf16(h.q, n), round_to_bf16(h.k, n), round_to_bf16(h.v, n), round_to_bf16(h.dout, n);
      h.q16 = bf16_copy(h.q, n), h.k16 = bf16_copy(h.k, n), h.v16 = bf16_copy(h.v, n), h.dout16 = bf16_copy(h.dout, n);
    }
    long before = cuda_mock_launches("mpl_sdpa_fwd_tc"), x3 = cuda_mock_launches("mpl_sdpa_fwd_x3");
    MplSdpa c = sdpa_on(&cpu, &a, &h, false), g = sdpa_on(&cu, &a, &h, true);
    ck_assert_msg(cpu.ops->sdpa(&cpu, &c, &err) == MPL_OK, "%s", err.msg);
    ck_assert_msg(cu.ops->sdpa(&cu, &g, &err) == MPL_OK, "%s", err.msg);
    sdpa_compare(&cu, g.out, c.out, n, in16 ? 1.0 / 128 : 4e-5, "out", &a);
    ck_assert_msg(in16 ? cuda_mock_launches("mpl_sdpa_fwd_tc") == before + 1 : cuda_mock_launches("mpl_sdpa_fwd_x3") == x3 + 1,
                  "%s inputs: not the %s build's forward", in16 ? "bf16" : "f32", in16 ? "bf16" : "f32");
    sdpa_free(&cu, &g, &c, &h);
  }
  close_pair(&cu, &cpu);
}
END_TEST

/* ---- the fused cross-entropy --------------------------------------------------------------------- */

/* Case which: bit 0 tb; which / 2: f32, bf16, bf16 inputs (a bf16 step; its scratch is
 * larger, so the device grows it). N 20 rows in blocks of 8, the last of 4. */
static void check_ce(MplDevice *cu, MplDevice *cpu, int which, bool capture_first) {
  bool tb = which & 1, in16 = which / 2 == 2, bf16 = which / 2 >= 1;
  MplErr err = {{0}};
  const int64_t N = 20, K = 24, V = 50;
  float *x = random_f32(N * K, 1), *w = random_f32(K * V, 1);
  if (bf16) round_to_bf16(x, N * K), round_to_bf16(w, K * V);
  uint16_t *x16 = bf16_copy(x, N * K), *w16 = bf16_copy(w, K * V);
  int32_t *tg = malloc(4 * N);
  for (int64_t i = 0; i < N; i++) tg[i] = (int32_t)((i * 7 + 3) % V);
  MplCe a = {.N = N, .K = K, .V = V, .chunk = 8, .tb = tb, .bf16 = bf16, .in16 = in16};
  MplCe c = a, g = a;
  float *cl = malloc(4), *cdx = malloc(4 * N * K), *cdw = malloc(4 * K * V);
  c.x = x, c.w = w, c.x16 = x16, c.w16 = w16, c.targets = tg, c.loss = cl, c.dx = cdx, c.dw = cdw;
  if (in16) g.x16 = dev_put(cu, x16, 2 * N * K), g.w16 = dev_put(cu, w16, 2 * K * V);
  else g.x = dev_put(cu, x, 4 * N * K), g.w = dev_put(cu, w, 4 * K * V);
  g.targets = dev_put(cu, tg, 4 * N);
  g.loss = dev_put(cu, NULL, 4), g.dx = dev_put(cu, NULL, 4 * N * K), g.dw = dev_put(cu, NULL, 4 * K * V);
  long rows_before = cuda_mock_launches("mpl_ce_rows");
  /* capture_first (graphs on): a zeroing first, so that a capture is open when the device
     loads the kernels (the first case) or grows its scratch (bf16 inputs) */
  if (capture_first) ck_assert_msg(cu->ops->zero(cu, g.dw, 4 * K * V, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(cpu->ops->ce(cpu, &c, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(cu->ops->ce(cu, &g, &err) == MPL_OK, "%s", err.msg);
  float *got = malloc(4 * K * V);
  double tol = bf16 ? 1.0 / 64 : 4e-5;
  const float *const dev[] = {g.loss, g.dx, g.dw}, *const want[] = {cl, cdx, cdw};
  const int64_t n[] = {1, N * K, K * V};
  for (int i = 0; i < 3; i++) {
    dev_get(cu, got, dev[i], 4 * n[i]);
    double e = rel_err(got, want[i], n[i]);
    ck_assert_msg(e <= tol, "ce%s%s%s: %s off by %g (tolerance %g)", tb ? " tb" : "", bf16 ? " bf16" : "",
                  in16 ? " in16" : "", (const char *[]){"loss", "dx", "dw"}[i], e, tol);
  }
  ck_assert_int_eq(cuda_mock_launches("mpl_ce_rows") - rows_before, 3); /* (with graphs: run by the reads) */
  const void *const bufs[] = {g.x, g.w, g.x16, g.w16, g.targets, g.loss, g.dx, g.dw};
  for (int i = 0; i < 8; i++)
    if (bufs[i]) cu->ops->arena_free(cu, (void *)bufs[i]);
  free(x), free(w), free(x16), free(w16), free(tg), free(cl), free(cdx), free(cdw), free(got);
}

START_TEST(test_ce) {
  MplDevice cu = open_device(&mpl_device_cuda_ops, false), cpu = open_device(&mpl_device_cpu_ops, false);
  for (int which = 0; which < 6; which++) check_ce(&cu, &cpu, which, false);
  close_pair(&cu, &cpu);
}
END_TEST

/* MPL_CUDA_GRAPHS on the device alone (MplDevice.graphs): off until the first pass ends
 * (step_done); then work is captured and runs as a graph where the host meets the stream
 * (here: each copy to the host), the same bits as without; a capture open when the device
 * loads a module (the cross-entropy's kernels, on first use) or grows its scratch ends
 * first (the mock fails a test on either inside a capture). */
START_TEST(test_graphs_device) {
  MplDevice cu = {.ops = &mpl_device_cuda_ops, .graphs = true}, cpu = open_device(&mpl_device_cpu_ops, false);
  MplErr err = {{0}};
  ck_assert_msg(cu.ops->init(&cu, 0, 2, &err) == MPL_OK, "%s", err.msg);
  MockGraphStats s0 = cuda_mock_graph_stats();
  float one = 1, back = 0;
  float *x = dev_put(&cu, &one, 4);
  ck_assert_msg(cu.ops->zero(&cu, x, 4, &err) == MPL_OK, "%s", err.msg); /* not yet on: run at once */
  ck_assert_int_eq(cuda_mock_graph_stats().captures, s0.captures);
  cu.ops->step_done(&cu);
  ck_assert_msg(cu.ops->copy_from_host(&cu, x, &one, 4, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(cu.ops->zero(&cu, x, 4, &err) == MPL_OK, "%s", err.msg); /* captured: not run yet */
  ck_assert_int_eq(cuda_mock_graph_stats().captures, s0.captures + 1);
  ck_assert_msg(cu.ops->sync(&cu, &err) == MPL_OK, "%s", err.msg); /* the graph runs */
  dev_get(&cu, &back, x, 4);
  ck_assert(back == 0.0f);
  cu.ops->arena_free(&cu, x);
  MockGraphStats s1 = cuda_mock_graph_stats();
  for (int which = 0; which < 6; which++) check_ce(&cu, &cpu, which, true);
  MockGraphStats s2 = cuda_mock_graph_stats();
  /* each case a graph at its first copy to the host; and one more where the first case loads
     the kernels and where the bf16 inputs' case grows the scratch, each inside a capture */
  ck_assert_msg(s2.launches - s1.launches == 8 && s2.nodes - s1.nodes >= 6 * 10, "%ld graph launches, %ld records",
                s2.launches - s1.launches, s2.nodes - s1.nodes);
  /* freed with a capture open (a run that failed between two meeting points, and no
     communicator to drop it): the capture is dropped, not run, and nothing is left behind */
  float *y = dev_put(&cu, &one, 4);
  ck_assert_msg(cu.ops->zero(&cu, y, 4, &err) == MPL_OK, "%s", err.msg);
  ck_assert_int_eq(cuda_mock_graph_stats().captures, s2.captures + 1);
  cpu.ops->free(&cpu);
  cu.ops->free(&cu);
  float kept = 0;
  ck_assert(cudaMemcpy(&kept, y, 4, cudaMemcpyDeviceToHost) == cudaSuccess && kept == 1.0f); /* not run */
  ck_assert(cudaFree(y) == cudaSuccess); /* (the test's own buffer: a run's is in its arena) */
  ck_assert_msg(cuda_mock_live() == 0, "the cuda device left %d CUDA objects behind", cuda_mock_live());
}
END_TEST

/* ---- an embedding's gradient ------------------------------------------------------------------------ */

/* An embedding's gradient of idx (M positions) and dy (rows of N) into K rows on both
 * devices: the cpu's bits; the gradient (the cuda device's) returned, for the caller to free. */
static float *emb_both(MplDevice *cu, MplDevice *cpu, const int32_t *idx, const float *dy, int64_t M, int64_t N,
                       int64_t K, const char *what) {
  MplErr err = {{0}};
  float *want = malloc(4 * K * N), *got = malloc(4 * K * N);
  MplEmbGrad c = {M, N, K, idx, dy, want};
  MplEmbGrad g = {M, N, K, dev_put(cu, idx, 4 * M), dev_put(cu, dy, 4 * M * N), dev_put(cu, NULL, 4 * K * N)};
  ck_assert_msg(cpu->ops->emb_grad(cpu, &c, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(cu->ops->emb_grad(cu, &g, &err) == MPL_OK, "%s", err.msg);
  dev_get(cu, got, g.out, 4 * K * N);
  same_bits(got, want, K * N, what);
  cu->ops->arena_free(cu, (void *)g.idx), cu->ops->arena_free(cu, (void *)g.dy), cu->ops->arena_free(cu, g.out);
  free(want);
  return got;
}

/* 300 positions (two tiles of the kernel), rows of 20, 30 rows, most positions on row 4,
 * two indices out of range: the cpu's bits. Then no index past K, and 3 more rows: the last
 * rows, which no position names (nor clamps to), are zeros (pass 99: zeroing one row fewer
 * was seen only by test_cuda_jobs). */
START_TEST(test_emb_grad) {
  MplDevice cu = open_device(&mpl_device_cuda_ops, false), cpu = open_device(&mpl_device_cpu_ops, false);
  const int64_t M = 300, N = 20, K = 30;
  int32_t *idx = malloc(4 * M);
  for (int64_t p = 0; p < M; p++) idx[p] = p % 3 ? 4 : (int32_t)((p * 13) % K);
  idx[17] = -2, idx[250] = (int32_t)K + 5;
  float *dy = random_f32(M * N, 1);
  free(emb_both(&cu, &cpu, idx, dy, M, N, K, "emb_grad"));
  idx[250] = 7;
  float *got = emb_both(&cu, &cpu, idx, dy, M, N, K + 3, "emb_grad, unnamed last rows");
  for (int64_t i = K * N; i < (K + 3) * N; i++) ck_assert_msg(got[i] == 0.0f, "unnamed row %lld: %g", (long long)(i / N), got[i]);
  close_pair(&cu, &cpu);
  free(idx), free(dy), free(got);
}
END_TEST

/* ---- the job's kernels ----------------------------------------------------------------------------- */

/* Two kernels in compiler/cg_cuda.c's layout (the buffers, then seed, step, mb, tpi and
 * n_outer): a grid-stride one and a warp-per-row one that says so in NAME_lanes. */
static const char job_src[] =
    "extern \"C\" __global__ void job_affine(const float *__restrict__ a0, float *__restrict__ a1, long long seed,\n"
    "    long long step, long long mb, long long tpi, long long n_outer) {\n"
    "  for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < n_outer;\n"
    "       o += (long long)blockDim.x * gridDim.x)\n"
    "    a1[o] = a0[o] * 2.0f + (float)(seed + 10 * step + 100 * mb + 1000 * tpi);\n"
    "}\n"
    "extern \"C\" __global__ void job_rowsum(const float *__restrict__ a0, float *__restrict__ a1, long long seed,\n"
    "    long long step, long long mb, long long tpi, long long n_outer) {\n"
    "  const int lane = (int)(threadIdx.x & 31u);\n"
    "  for (long long o = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32; o < n_outer;\n"
    "       o += (long long)blockDim.x * gridDim.x / 32) {\n"
    "    float s = 0.0f;\n"
    "    for (int j = 0; j < 40; j++) s += a0[o * 40 + j];\n"
    "    if (lane == 0) a1[o] = s;\n"
    "  }\n"
    "}\n"
    "__constant__ int job_rowsum_lanes = 32;\n";
enum { ROW = 40 };

/* Their host copies: the same statements. */
#define P(t, i) (*(t *)p[i])
static void job_affine_body(void *ctx) {
  void **p = ctx;
  const float *a0 = P(const float *, 0);
  float *a1 = P(float *, 1);
  long long seed = P(long long, 2), step = P(long long, 3), mb = P(long long, 4), tpi = P(long long, 5);
  for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < P(long long, 6);
       o += (long long)blockDim.x * gridDim.x)
    a1[o] = a0[o] * 2.0f + (float)(seed + 10 * step + 100 * mb + 1000 * tpi);
}
static void job_rowsum_body(void *ctx) {
  void **p = ctx;
  const float *a0 = P(const float *, 0);
  float *a1 = P(float *, 1);
  const int lane = (int)(threadIdx.x & 31u);
  for (long long o = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32; o < P(long long, 6);
       o += (long long)blockDim.x * gridDim.x / 32) {
    float s = 0.0f;
    for (int j = 0; j < ROW; j++) s += a0[o * ROW + j];
    if (lane == 0) a1[o] = s;
  }
}
static unsigned job_grid, job_threads; /* the last launch's shape */
static void job_affine_run(void **p, unsigned grid, unsigned threads) {
  job_grid = grid, job_threads = threads;
  cuda_mock_dev(P(float *, 0), 4 * (size_t)P(long long, 6)), cuda_mock_dev(P(float *, 1), 4 * (size_t)P(long long, 6));
  host_launch_grid(grid, threads, job_affine_body, p);
}
static void job_rowsum_run(void **p, unsigned grid, unsigned threads) {
  job_grid = grid, job_threads = threads;
  cuda_mock_dev(P(float *, 0), 4 * ROW * (size_t)P(long long, 6));
  cuda_mock_dev(P(float *, 1), 4 * (size_t)P(long long, 6));
  host_launch_grid(grid, threads, job_rowsum_body, p);
}
#undef P
static const MockKernel job_kernels[] = {{"job_affine", 0, job_affine_run, NULL}, {"job_rowsum", 0, job_rowsum_run, NULL}};

static JobKernels job_of(char *ptx, bool with_src, char **names, int n) {
  return (JobKernels){.cuda_src = with_src ? (char *)job_src : NULL, .cuda_src_len = with_src ? sizeof job_src - 1 : 0,
                      .ptx = ptx, .ptx_len = ptx ? strlen(ptx) : 0, .nkernels = n, .names = names};
}

/* close_cuda, what it writes to stderr into text[0 .. n) */
static void close_cuda_capturing_stderr(MplDevice *d, char *text, size_t n) {
  FILE *f = tmpfile();
  ck_assert(f);
  fflush(stderr);
  int saved = dup(2);
  ck_assert(saved >= 0 && dup2(fileno(f), 2) == 2);
  close_cuda(d);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(f);
  text[fread(text, 1, n - 1, f)] = 0;
  fclose(f);
}

/* n_outer 1000 and 20000 (past the 32-block cap) for the plain kernel, 5 and 300 rows for
 * the warp kernel, a step each; under MPL_PROFILE=1, whose table counts the steps after the
 * first and their launches. The driver refuses the job's PTX ("not PTX"), so the source is
 * compiled with NVRTC. */
START_TEST(test_job_kernels) {
  setenv("MPL_PROFILE", "1", 1);
  MplDevice d = open_device(&mpl_device_cuda_ops, false);
  MplErr err = {{0}};
  char *names[] = {"job_affine", "job_rowsum"}, bad_ptx[] = "not PTX at all";
  JobKernels k = job_of(bad_ptx, true, names, 2);
  ck_assert_msg(d.ops->load_kernels(&d, &k, &err) == MPL_OK, "%s", err.msg);
  const int64_t scal[MPL_KERNEL_SCALARS] = {11, 22, 33, 3};
  const int64_t outer[4] = {1000, 20000, 5, 300};
  int64_t n_in = 20000 * ROW;
  float *x = random_f32(n_in, 1), *y = malloc(4 * 20000);
  float *dx = dev_put(&d, x, 4 * n_in), *dy = dev_put(&d, NULL, 4 * 20000);
  for (int c = 0; c < 4; c++) {
    int kernel = c < 2 ? 0 : 1;
    void *args[] = {dx, dy};
    ck_assert_msg(d.ops->zero(&d, dy, 4 * 20000, &err) == MPL_OK, "%s", err.msg);
    ck_assert_msg(d.ops->launch(&d, kernel, args, 2, scal, outer[c], &err) == MPL_OK, "%s", err.msg);
    ck_assert_msg(d.ops->sync(&d, &err) == MPL_OK, "%s", err.msg); /* (MPL_MOCK_DEFER: it runs here) */
    /* a thread an iteration, a warp for the warp kernel, but at most 32 blocks (1 SM) */
    int64_t threads = outer[c] * (kernel ? 32 : 1);
    ck_assert_msg(job_grid <= 32 && (job_grid == 32 || (int64_t)job_grid * job_threads >= threads),
                  "%s n_outer %lld: %u blocks of %u threads", names[kernel], (long long)outer[c], job_grid, job_threads);
    d.ops->step_done(&d);
    dev_get(&d, y, dy, 4 * 20000);
    for (int64_t o = 0; o < 20000; o++) {
      float want = 0.0f;
      if (o < outer[c] && kernel == 0) want = x[o] * 2.0f + (float)(11 + 10 * 22 + 100 * 33 + 1000 * 3);
      for (int j = 0; o < outer[c] && kernel == 1 && j < ROW; j++) want += x[o * ROW + j];
      ck_assert_msg(!memcmp(&y[o], &want, 4), "%s n_outer %lld: [%lld] = %g, want %g", names[kernel],
                    (long long)outer[c], (long long)o, y[o], want);
    }
  }
  ck_assert_int_eq(cuda_mock_launches("job_affine"), 2);
  ck_assert_int_eq(cuda_mock_launches("job_rowsum"), 2);
  ck_assert_int_eq(d.ops->launch(&d, 2, (void *[]){dx, dy}, 2, scal, 10, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "kernel 2 is not loaded"), "%s", err.msg);
  d.ops->arena_free(&d, dx), d.ops->arena_free(&d, dy);
  /* the profile's table, at free: steps 2 .. 4 counted, a zeroing and a launch each */
  char table[4096];
  close_cuda_capturing_stderr(&d, table, sizeof table);
  ck_assert_msg(strstr(table, "3 steps after the first: 6 launches") && strstr(table, "job_rowsum"), "%s", table);
  /* the kernels' rows, the largest time first (the mock's clock: 1 ns a thread, so they
     differ; pass 99: the order reversed failed no test) */
  double prev = INFINITY;
  int rows = 0;
  for (const char *at = strstr(table, "kernel\n"); at && (at = strchr(at, '\n')) && at[1]; rows++) {
    double ms, us;
    long long calls;
    if (sscanf(at + 1, "%lf %lld %lf", &ms, &calls, &us) != 3) break;
    double t = (double)calls * us; /* (finer than the ms column) */
    ck_assert_msg(t <= prev, "MPL_PROFILE's rows are not the largest time first:\n%s", table);
    ck_assert_msg(rows == 0 || t < prev, "two rows of one time (%.1f us): the order is not tested\n%s", t, table);
    prev = t;
    at++;
  }
  ck_assert_msg(rows >= 2, "%d kernel rows in MPL_PROFILE's table:\n%s", rows, table);
  unsetenv("MPL_PROFILE");
  free(x), free(y);
}
END_TEST

/* A job whose PTX the driver refuses and that has no source: the JIT's log in the message;
 * one that names a kernel its module lacks: the name in the message. Nothing left behind. */
START_TEST(test_job_errors) {
  MplErr err = {{0}};
  MplDevice d = open_device(&mpl_device_cuda_ops, false);
  char *names[] = {"job_affine", "job_missing"}, bad_ptx[] = "not PTX at all";
  JobKernels k = job_of(bad_ptx, false, names, 1);
  ck_assert_int_eq(d.ops->load_kernels(&d, &k, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "cannot load the job's PTX") && strstr(err.msg, "mock: not PTX"), "%s", err.msg);
  close_cuda(&d);

  d = open_device(&mpl_device_cuda_ops, false);
  k = job_of(NULL, true, names, 2);
  err = (MplErr){{0}};
  ck_assert_int_eq(d.ops->load_kernels(&d, &k, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "job_missing") && strstr(err.msg, "not found"), "%s", err.msg);
  close_cuda(&d);
}
END_TEST

/* NVRTC once per program: a second request for the same source and options is served from
 * the process's cache (cudev_compile): the same PTX and log, in a small fraction of the
 * compile's time; another architecture is a program of its own. */
static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
START_TEST(test_nvrtc_cache) {
  MplErr err = {{0}};
  char *a = NULL, *b = NULL, *c = NULL, log_a[1024], log_b[1024] = "x", log_c[1024];
  double t0 = seconds();
  ck_assert_msg(mpl_cuda_emb_compile("compute_80", &a, log_a, sizeof log_a, &err) == MPL_OK, "%s", err.msg);
  double t1 = seconds();
  ck_assert_msg(mpl_cuda_emb_compile("compute_80", &b, log_b, sizeof log_b, &err) == MPL_OK, "%s", err.msg);
  double t2 = seconds();
  ck_assert_msg(mpl_cuda_emb_compile("compute_90", &c, log_c, sizeof log_c, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(a != b && !strcmp(a, b) && !strcmp(log_a, log_b), "the cached PTX is not the compiled one");
  ck_assert_msg(strstr(a, ".target sm_80") && strstr(c, ".target sm_90"), "the architectures were confused");
  ck_assert_msg((t2 - t1) * 20 < t1 - t0, "the second compilation took %.3f s, the first %.3f s", t2 - t1, t1 - t0);
  mpl_free(a), mpl_free(b), mpl_free(c);
}
END_TEST

/* The runtime's own programs reach the disk cache too (pass 99: dropping the put left every
 * run compiling them anew, and no test saw it): a compile in a fresh folder puts one entry. */
START_TEST(test_nvrtc_disk_cache) {
  char dir[] = "/tmp/mpl_nvrtc_cache_XXXXXX", cmd[64];
  ck_assert(mkdtemp(dir));
  setenv("MPL_CACHE_DIR", dir, 1);
  int64_t h0, m0, p0, h1, m1, p1;
  mpl_kcache_stats(&h0, &m0, &p0);
  MplErr err = {{0}};
  char *ptx = NULL, log[1024];
  ck_assert_msg(mpl_cuda_ce_compile("compute_86", &ptx, log, sizeof log, &err) == MPL_OK, "%s", err.msg);
  mpl_kcache_stats(&h1, &m1, &p1);
  ck_assert_msg(p1 == p0 + 1 && m1 == m0 + 1, "a first compile: %lld misses, %lld puts", (long long)(m1 - m0),
                (long long)(p1 - p0));
  mpl_free(ptx);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert(system(cmd) == 0);
}
END_TEST

int main(void) {
  cuda_mock_add_kernels(cuda_mock_optim, cuda_mock_noptim, NULL);
  cuda_mock_add_kernels(cuda_mock_ce, cuda_mock_nce, NULL);
  cuda_mock_add_kernels(cuda_mock_emb, cuda_mock_nemb, NULL);
  cuda_mock_add_kernels(job_kernels, 2, NULL);
  Suite *s = suite_create("cuda_mock");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_memory);
  tcase_add_test(tc, test_alloc_failure);
  tcase_add_test(tc, test_optim_single);
  tcase_add_test(tc, test_optim_sumsq);
  tcase_add_test(tc, test_optim_lists);
  tcase_add_test(tc, test_optim_sumsq_order);
  tcase_add_test(tc, test_sdpa_builds_apart);
  tcase_add_test(tc, test_gemm);
  tcase_add_test(tc, test_accum);
  tcase_add_loop_test(tc, test_sdpa, 0, cuda_mock_nsdpa + 5);
  tcase_add_test(tc, test_ce);
  tcase_add_test(tc, test_graphs_device);
  tcase_add_test(tc, test_emb_grad);
  tcase_add_test(tc, test_job_kernels);
  tcase_add_test(tc, test_job_errors);
  tcase_add_test(tc, test_nvrtc_cache);
  tcase_add_test(tc, test_nvrtc_disk_cache);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#else /* !MPL_HAVE_CUDA: nothing to run */

START_TEST(test_built_without_cuda) { printf("note: built without CUDA; the cuda device's host code is not run\n"); }
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_mock");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_built_without_cuda);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
