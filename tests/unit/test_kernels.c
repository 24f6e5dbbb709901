/*
 * test_kernels.c — fusion, the kernel IR and the LLVM emitter, end to end on the CPU:
 * small graphs built by hand are lowered with fuse_program, compiled with
 * cg_llvm_module + mpl_jit_load, run by a tiny step executor (GEMMs as naive loops)
 * and compared with the float64 reference evaluator (relative 1e-5).
 *
 * Invariants checked on every graph: the result does not depend on how the outer
 * iterations are split (1, 2 or 3 chunks give the same bits); the fused lowering
 * gives the same bits as every op lowered on its own; cutting the op list into two
 * programs sharing one KernelSet gives the same bits too.
 */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/autodiff.h"
#include "compiler/kernel.h"
#include "runtime/device.h"
#include "runtime/jit_cpu.h"
#include "runtime/mpl.h"

#include <llvm-c/BitWriter.h>
#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

/* the compiler's kernels and the runtime's callers agree on the scalars */
_Static_assert((int)KIR_SCALARS == (int)MPL_KERNEL_SCALARS, "kernel.h and device.h disagree on the kernels' scalars");

/* ---- graph building ---------------------------------------------------------- */

static Arena arena;
static Graph *G;

static void setup(void) {
  arena_init(&arena);
  G = graph_new(&arena);
}

static void teardown(void) { arena_free(&arena); }

static Shape S(int rank, ...) {
  Shape s = {.rank = rank};
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++) s.d[i] = va_arg(ap, int);
  va_end(ap);
  return s;
}

static int op(OpKind k, DType dt, Shape s, int nin, ...) {
  int in[8];
  va_list ap;
  va_start(ap, nin);
  for (int i = 0; i < nin; i++) in[i] = va_arg(ap, int);
  va_end(ap);
  Op *o = graph_add(G, k, nin, in, (Loc){0});
  o->dtype = dt;
  o->shape = s;
  return o->id;
}

static Op *O(int id) { return G->ops[id]; }

static int input(Shape s, DType dt) { return op(OP_INPUT, dt, s, 0); }
static int un(OpKind k, int x) { return op(k, O(x)->dtype, O(x)->shape, 1, x); }

static int bin(OpKind k, int x, int y) {
  Shape s;
  ck_assert(shape_broadcast(&O(x)->shape, &O(y)->shape, &s));
  DType dt = k >= OP_EQ && k <= OP_GE ? DT_BOOL : O(x)->dtype;
  return op(k, dt, s, 2, x, y);
}

static int full(double v, Shape s) {
  int id = op(OP_FULL, DT_F32, s, 0);
  O(id)->value = v;
  return id;
}

static int reduce(OpKind k, int x, int axis, bool keepdims) {
  Shape in = O(x)->shape, s = {0};
  int a = axis == AXIS_ALL ? -1 : (axis < 0 ? axis + in.rank : axis);
  for (int i = 0; i < in.rank; i++) {
    bool r = axis == AXIS_ALL || i == a;
    if (!r) s.d[s.rank++] = in.d[i];
    else if (keepdims) s.d[s.rank++] = 1;
  }
  int id = op(k, O(x)->dtype, s, 1, x);
  O(id)->axis = axis;
  O(id)->keepdims = keepdims;
  return id;
}

static int softmax(OpKind k, int x, int axis) {
  int id = un(k, x);
  O(id)->axis = axis;
  return id;
}

/* ---- the step executor ------------------------------------------------------------- */

static uint64_t rng_state;
static double rnd(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}

typedef struct Run {
  void **buf;
  bool *own, *written;
} Run;

static void *alloc_value(const Op *o) {
  size_t n = (size_t)shape_numel(&o->shape) * (size_t)dtype_size(o->dtype);
  return calloc(n ? n : 1, 1);
}

/* Leaves get deterministic data (ints in [0, int_hi)); the same bits for every run. */
static int64_t int_hi = 4;

static void fill_leaf(const Op *o, void *p) {
  int64_t n = shape_numel(&o->shape);
  rng_state = 0x1234u + (uint64_t)o->id * 7919u;
  for (int64_t i = 0; i < n; i++) {
    if (o->dtype == DT_F32) ((float *)p)[i] = (float)(rnd() * 4.0 - 2.0);
    else if (o->dtype == DT_I32) ((int32_t *)p)[i] = (int32_t)(rnd() * (double)int_hi);
    else ((uint8_t *)p)[i] = rnd() < 0.5;
  }
}

static double get(const Op *o, const void *p, int64_t i) {
  if (o->dtype == DT_F32) return ((const float *)p)[i];
  if (o->dtype == DT_I32) return ((const int32_t *)p)[i];
  return ((const uint8_t *)p)[i];
}

static Run run_new(void) {
  Run r = {calloc((size_t)G->nops, sizeof(void *)), calloc((size_t)G->nops, 1), calloc((size_t)G->nops, 1)};
  for (int i = 0; i < G->nops; i++) {
    if (O(i)->kind == OP_INPUT || O(i)->kind == OP_PARAM) {
      r.buf[i] = alloc_value(O(i));
      fill_leaf(O(i), r.buf[i]);
      r.own[i] = true;
    }
  }
  return r;
}

static void run_free(Run *r) {
  for (int i = 0; i < G->nops; i++)
    if (r->own[i]) free(r->buf[i]);
  free(r->buf);
  free(r->own);
  free(r->written);
}

static void *value_buf(Run *r, int v) {
  if (!r->buf[v]) {
    r->buf[v] = alloc_value(O(v));
    r->own[v] = true;
  }
  return r->buf[v];
}

static void run_gemm(Run *r, const Step *s) {
  const float *A = value_buf(r, s->a), *B = value_buf(r, s->b);
  float *C = value_buf(r, s->c);
  for (int64_t q = 0; q < s->batch; q++) {
    const float *a = A + s->off_a + q * s->stride_a, *b = B + s->off_b + q * s->stride_b;
    float *c = C + s->off_c + q * s->stride_c;
    for (int64_t i = 0; i < s->m; i++)
      for (int64_t j = 0; j < s->n; j++) {
        float acc = 0.0f;
        for (int64_t p = 0; p < s->k; p++)
          acc += (s->ta ? a[p * s->m + i] : a[i * s->k + p]) * (s->tb ? b[j * s->k + p] : b[p * s->n + j]);
        c[i * s->n + j] = s->beta != 0.0 ? c[i * s->n + j] + acc : acc;
      }
  }
  r->written[s->c] = true;
}

static void run_kernel(Run *r, const KernelSet *ks, MplJit *jit, const Step *s, int chunks, const int64_t *sc) {
  MplJitKernelFn fn = (MplJitKernelFn)mpl_jit_lookup(jit, ks->k[s->kernel]->name);
  ck_assert_msg(fn != NULL, "kernel %s not found", ks->k[s->kernel]->name);
  void *args[64];
  ck_assert_int_le(s->nargs, 64);
  for (int j = 0; j < s->nargs; j++) {
    args[j] = value_buf(r, s->args[j]);
    if (ks->k[s->kernel]->args[j].mode != KA_IN) r->written[s->args[j]] = true;
  }
  int64_t n = s->n_outer;
  for (int c = 0; c < chunks; c++) fn(args, sc, n * c / chunks, n * (c + 1) / chunks);
}

static void run_program(Run *r, const KernelSet *ks, MplJit *jit, const Program *p, int chunks, const int64_t *sc) {
  for (int i = 0; i < p->nsteps; i++) {
    const Step *s = &p->steps[i];
    switch (s->kind) {
    case STEP_KERNEL: run_kernel(r, ks, jit, s, chunks, sc); break;
    case STEP_GEMM: run_gemm(r, s); break;
    case STEP_ALIAS:
      ck_assert(r->buf[s->b] != NULL);
      ck_assert_int_eq(s->numel, shape_numel(&O(s->b)->shape));
      r->buf[s->a] = r->buf[s->b];
      r->written[s->a] = true;
      break;
    case STEP_ACCUM: {
      float *acc = value_buf(r, s->a);
      const float *x = value_buf(r, s->b);
      for (int64_t j = 0; j < s->numel; j++) acc[j] += x[j];
      r->written[s->a] = true;
      break;
    }
    case STEP_EMB_GRAD: { /* the cpu device's (runtime/device_cpu.c), over 3 threads */
      const MplDeviceOps *ops = mpl_device_find("cpu");
      MplDevice d = {.ops = ops};
      MplErr err = {{0}};
      ck_assert_msg(ops->init(&d, 0, 3, &err) == MPL_OK, "%s", err.msg);
      MplEmbGrad a = {.M = s->m, .N = s->n, .K = s->k, .idx = value_buf(r, s->args[0]), .dy = value_buf(r, s->args[1]),
                      .out = value_buf(r, s->args[2])};
      ck_assert_msg(ops->emb_grad(&d, &a, &err) == MPL_OK, "%s", err.msg);
      ops->free(&d);
      r->written[s->args[2]] = true;
      break;
    }
    case STEP_COMM: ck_abort_msg("no comm ops in these tests"); break;
    case STEP_SDPA: case STEP_SDPA_BWD: case STEP_CE:
      ck_abort_msg("no fused attention or cross-entropy in these tests (test_sdpa, test_ce)");
      break;
    }
  }
}

/* ---- the checks ---------------------------------------------------------------------- */

typedef struct Built {
  KernelSet *ks;
  Program *p[2];
  int np;
  MplJit *jit;
} Built;

static void lower(Built *b, const int *ops, int nops, bool fusion, int cut) {
  b->ks = kset_new(&arena);
  b->ks->no_fusion = !fusion;
  b->np = cut ? 2 : 1;
  if (cut) {
    b->p[0] = fuse_program(&arena, G, ops, cut, b->ks);
    b->p[1] = fuse_program(&arena, G, ops + cut, nops - cut, b->ks);
  } else {
    b->p[0] = fuse_program(&arena, G, ops, nops, b->ks);
  }
  for (int i = 0; i < b->ks->n; i++) kir_verify(b->ks->k[i]);
  FILE *null = fopen("/dev/null", "w");
  kir_dump(null, b->ks, b->p[0]);
  fclose(null);
  void *bc;
  size_t len;
  char err[4096];
  int rc = cg_llvm_module(b->ks, &bc, &len, err, sizeof err);
  ck_assert_msg(rc == 0, "cg_llvm_module: %s", err);
  b->jit = mpl_jit_load(bc, len, err, sizeof err);
  free(bc);
  ck_assert_msg(b->jit != NULL, "mpl_jit_load: %s", err);
}

/* b's programs on r's buffers (leaves as they are: a test may set some first). */
static void run_built(Run *r, Built *b, int chunks, const int64_t *sc) {
  for (int i = 0; i < b->np; i++) run_program(r, b->ks, b->jit, b->p[i], chunks, sc);
}

static Run execute(Built *b, int chunks, const int64_t *sc) {
  Run r = run_new();
  run_built(&r, b, chunks, sc);
  return r;
}

static bool close_enough(double a, double r) {
  if (isnan(a) || isnan(r)) return isnan(a) && isnan(r);
  if (isinf(r)) return a == r;
  return fabs(a - r) <= 1e-5 * fmax(1.0, fabs(r));
}

static void compare_ref(const Run *r, const RefCtx *ctx) {
  double **vals = calloc((size_t)G->nops, sizeof(double *));
  for (int i = 0; i < G->nops; i++) {
    const Op *o = O(i);
    if (o->kind != OP_INPUT && o->kind != OP_PARAM) continue;
    int64_t n = shape_numel(&o->shape);
    vals[i] = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t j = 0; j < n; j++) vals[i][j] = get(o, r->buf[i], j);
  }
  ref_eval(G, vals, ctx);
  int checked = 0;
  for (int i = 0; i < G->nops; i++) {
    if (!r->written[i]) continue;
    const Op *o = O(i);
    for (int64_t j = 0, n = shape_numel(&o->shape); j < n; j++) {
      double a = get(o, r->buf[i], j), x = vals[i][j];
      ck_assert_msg(close_enough(a, x), "%%%d %s[%lld]: kernel %.9g, reference %.9g", i, op_name(o->kind),
                    (long long)j, a, x);
    }
    checked++;
  }
  ck_assert_int_gt(checked, 0);
  ref_free(G, vals);
  for (int i = 0; i < G->nops; i++) free(vals[i]);
  free(vals);
}

/* Values written in both runs have the same bits. */
static void compare_bits(const Run *x, const Run *y, const char *what) {
  for (int i = 0; i < G->nops; i++) {
    if (!x->written[i] || !y->written[i]) continue;
    size_t n = (size_t)shape_numel(&O(i)->shape) * (size_t)dtype_size(O(i)->dtype);
    ck_assert_msg(memcmp(x->buf[i], y->buf[i], n) == 0, "%s: %%%d %s differs", what, i, op_name(O(i)->kind));
  }
}

static void free_built(Built *b) { mpl_jit_free(b->jit); }

/* Lowers every non-leaf op of G in id order and runs all the checks. */
static void check_graph(const RefCtx *ctx) {
  graph_verify(G);
  int *ops = malloc(sizeof(int) * (size_t)G->nops), n = 0;
  for (int i = 0; i < G->nops; i++)
    if (O(i)->kind != OP_INPUT && O(i)->kind != OP_PARAM) ops[n++] = i;
  int64_t sc[MPL_KERNEL_SCALARS] = {ctx ? (int64_t)ctx->seed : 0, ctx ? ctx->step : 0, ctx ? ctx->mb : 0, 0};
  Built fused, unfused, cut;
  lower(&fused, ops, n, true, 0);
  lower(&unfused, ops, n, false, 0);
  lower(&cut, ops, n, true, n / 2);
  Run r1 = execute(&fused, 1, sc), r2 = execute(&fused, 2, sc), r3 = execute(&fused, 3, sc);
  Run ru = execute(&unfused, 1, sc), rc = execute(&cut, 2, sc);
  compare_ref(&r1, ctx);
  compare_ref(&ru, ctx);
  compare_ref(&rc, ctx);
  compare_bits(&r1, &r2, "2 chunks");
  compare_bits(&r1, &r3, "3 chunks");
  compare_bits(&r1, &ru, "unfused");
  compare_bits(&r1, &rc, "cut in two programs");
  Run *runs[] = {&r1, &r2, &r3, &ru, &rc};
  for (int i = 0; i < 5; i++) run_free(runs[i]);
  free_built(&fused);
  free_built(&unfused);
  free_built(&cut);
  free(ops);
}

/* Number of kernels the fused lowering of all non-leaf ops makes. */
static int count_kernels(void) {
  int *ops = malloc(sizeof(int) * (size_t)G->nops), n = 0;
  for (int i = 0; i < G->nops; i++)
    if (O(i)->kind != OP_INPUT && O(i)->kind != OP_PARAM) ops[n++] = i;
  KernelSet *ks = kset_new(&arena);
  ks->no_dedup = true;
  Program *p = fuse_program(&arena, G, ops, n, ks);
  int k = 0;
  for (int i = 0; i < p->nsteps; i++) k += p->steps[i].kind == STEP_KERNEL;
  free(ops);
  return k;
}

/* ---- the cases --------------------------------------------------------------------------- */

START_TEST(test_linear_gelu_chain) {
  int x = input(S(2, 4, 8), DT_F32), w = input(S(1, 8), DT_F32), b = input(S(1, 8), DT_F32);
  int y = un(OP_GELU, bin(OP_ADD, bin(OP_MUL, x, w), b));
  un(OP_TANH, y);
  ck_assert_int_eq(count_kernels(), 1);
  check_graph(NULL);
}
END_TEST

START_TEST(test_unary_ops) {
  int x = input(S(2, 5, 7), DT_F32);
  int e = un(OP_EXP, x), a = un(OP_ABS, x);
  un(OP_LOG, e);
  un(OP_SQRT, a);
  un(OP_RSQRT, e);
  un(OP_SIGMOID, x);
  un(OP_RELU, x);
  un(OP_SIGN, x);
  un(OP_NEG, x);
  int p2 = un(OP_POW, x), p3 = un(OP_POW, x), pf = un(OP_POW, e), ph = un(OP_POW, e);
  O(p2)->value = 2.0, O(p3)->value = 3.0, O(pf)->value = 1.7, O(ph)->value = 0.5;
  check_graph(NULL);
}
END_TEST

/* Signed zeros through the emitted math: tanh(-0) is -0 as libm, CUDA's tanhf and PyTorch
 * give it (the polynomial gave +0); sin(-0) too. */
START_TEST(test_zero_and_nan_edges) {
  int x = input(S(1, 4), DT_F32);
  int t = un(OP_TANH, x), sn = un(OP_SIN, x);
  int ops[2] = {t, sn};
  Built b;
  lower(&b, ops, 2, true, 0);
  int64_t sc[MPL_KERNEL_SCALARS] = {0};
  Run r = run_new();
  float *in = r.buf[x];
  in[0] = -0.0f, in[1] = 0.0f, in[2] = -1e-30f, in[3] = 0.5f;
  run_built(&r, &b, 1, sc);
  const float *ot = r.buf[t], *os = r.buf[sn];
  ck_assert_msg(signbit(ot[0]) && ot[0] == 0.0f, "tanh(-0) = %a", (double)ot[0]);
  ck_assert_msg(!signbit(ot[1]) && ot[1] == 0.0f, "tanh(+0) = %a", (double)ot[1]);
  ck_assert_msg(ot[2] == -1e-30f, "tanh(-1e-30) = %a", (double)ot[2]);
  ck_assert_msg(fabs(ot[3] - tanh(0.5)) < 1e-7, "tanh(0.5) = %.9g", (double)ot[3]);
  ck_assert_msg(signbit(os[0]) && os[0] == 0.0f, "sin(-0) = %a", (double)os[0]);
  run_free(&r);
  free_built(&b);
  /* relu's gradient at a nan input passes the gradient, as PyTorch's threshold_backward
     (it gave 0); at 0 and below, 0 */
  int g = input(S(1, 4), DT_F32), rg = bin(OP_RELU_GRAD, x, g);
  int ops2[1] = {rg};
  lower(&b, ops2, 1, true, 0);
  r = run_new();
  float *xs = r.buf[x], *gs = r.buf[g];
  xs[0] = NAN, xs[1] = 0.0f, xs[2] = -1.0f, xs[3] = 2.0f;
  for (int i = 0; i < 4; i++) gs[i] = 3.0f;
  run_built(&r, &b, 1, sc);
  const float *og = r.buf[rg];
  ck_assert_msg(og[0] == 3.0f && og[1] == 0.0f && og[2] == 0.0f && og[3] == 3.0f, "relu_grad: %g %g %g %g", (double)og[0],
                (double)og[1], (double)og[2], (double)og[3]);
  run_free(&r);
  free_built(&b);
}
END_TEST

/* The emitted exp and tanh (Cephes' polynomials, cg_llvm.c) within 2 ulp of the exact
 * values, as cg_llvm.c states: 8,192 inputs over exp's whole finite range (to the
 * subnormal results) and over tanh's curved part, against libm in double rounded to float
 * (pass 116: a range reduction that rounds down, 6 ulp off, passed every 1e-5 tolerance). */
static int ulp_diff(float a, float b) {
  int32_t ia, ib;
  memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
  if (ia < 0) ia = INT32_MIN - ia;
  if (ib < 0) ib = INT32_MIN - ib;
  int64_t d = (int64_t)ia - ib;
  return (int)(d < 0 ? -d : d);
}

START_TEST(test_exp_tanh_ulp) {
  enum { N = 8192 };
  int x = input(S(1, N), DT_F32);
  int ex = un(OP_EXP, x), th = un(OP_TANH, x);
  int ops[2] = {ex, th};
  Built b;
  lower(&b, ops, 2, true, 0);
  int64_t sc[MPL_KERNEL_SCALARS] = {0};
  Run r = run_new();
  float *in = r.buf[x];
  for (int i = 0; i < N; i++) in[i] = -103.9f + (88.72f + 103.9f) * (float)i / (N - 1);
  run_built(&r, &b, 1, sc);
  const float *oe = r.buf[ex], *ot = r.buf[th];
  for (int i = 0; i < N; i++) {
    int d = ulp_diff(oe[i], (float)exp((double)in[i]));
    ck_assert_msg(d <= 2, "exp(%.9g) = %.9g, %d ulp from %.9g", (double)in[i], (double)oe[i], d, exp((double)in[i]));
  }
  for (int i = 0; i < N; i++) in[i] = -9.0f + 18.0f * (float)i / (N - 1);
  run_built(&r, &b, 1, sc);
  for (int i = 0; i < N; i++) {
    int d = ulp_diff(ot[i], (float)tanh((double)in[i]));
    ck_assert_msg(d <= 2, "tanh(%.9g) = %.9g, %d ulp from %.9g", (double)in[i], (double)ot[i], d, tanh((double)in[i]));
  }
  run_free(&r);
  free_built(&b);
}
END_TEST

START_TEST(test_binary_broadcast) {
  int a = input(S(2, 4, 1), DT_F32), b = input(S(2, 1, 6), DT_F32), c = input(S(1, 6), DT_F32);
  int d = input(S(3, 2, 4, 6), DT_F32);
  int s = bin(OP_SUB, a, b);
  bin(OP_DIV, s, un(OP_EXP, c));
  bin(OP_MAXIMUM, d, s);
  bin(OP_MINIMUM, s, d);
  bin(OP_ADD, c, d); /* broadcast the other way round */
  check_graph(NULL);
}
END_TEST

START_TEST(test_compare_where_cast) {
  int x = input(S(2, 3, 5), DT_F32), y = input(S(1, 5), DT_F32), i = input(S(1, 5), DT_I32);
  OpKind cmps[] = {OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE};
  int last = -1;
  for (int k = 0; k < 6; k++) last = bin(cmps[k], x, y);
  int lt = bin(OP_LT, x, y), gt = bin(OP_GT, x, y);
  int m = bin(OP_OR, bin(OP_AND, lt, un(OP_NOT, gt)), last);
  op(OP_WHERE, DT_F32, O(x)->shape, 3, m, x, un(OP_EXP, x));
  int xf = op(OP_CAST, DT_I32, O(x)->shape, 1, x);
  bin(OP_ADD, xf, i);
  op(OP_CAST, DT_F32, O(i)->shape, 1, i);
  op(OP_CAST, DT_F32, O(m)->shape, 1, m);
  op(OP_CAST, DT_BOOL, O(x)->shape, 1, x);
  int eqi = bin(OP_EQ, xf, i);
  op(OP_CAST, DT_I32, O(eqi)->shape, 1, eqi);
  check_graph(NULL);
}
END_TEST

START_TEST(test_grads_elementwise) {
  int x = input(S(2, 6, 5), DT_F32), dy = input(S(2, 6, 5), DT_F32);
  bin(OP_GELU_GRAD, x, dy);
  bin(OP_RELU_GRAD, x, dy);
  check_graph(NULL);
}
END_TEST

START_TEST(test_reductions_every_axis) {
  int x = input(S(3, 3, 4, 5), DT_F32);
  OpKind ks[] = {OP_SUM, OP_MEAN, OP_AMAX};
  for (int k = 0; k < 3; k++) {
    for (int a = 0; a < 3; a++) {
      reduce(ks[k], x, a, false);
      reduce(ks[k], x, a, true);
    }
    reduce(ks[k], x, AXIS_ALL, false);
    reduce(ks[k], x, AXIS_ALL, true);
    reduce(ks[k], x, -1, true);
  }
  check_graph(NULL);
}
END_TEST

START_TEST(test_reduction_prologue_epilogue) {
  int x = input(S(2, 6, 10), DT_F32), w = input(S(1, 10), DT_F32);
  int s = reduce(OP_SUM, bin(OP_MUL, x, w), -1, true);
  un(OP_EXP, bin(OP_MUL, s, full(0.5, S(0))));
  ck_assert_int_eq(count_kernels(), 1);
  check_graph(NULL);
}
END_TEST

START_TEST(test_softmax_axes) {
  int x = input(S(3, 2, 7, 9), DT_F32);
  softmax(OP_SOFTMAX, x, -1);
  softmax(OP_SOFTMAX, x, 1);
  softmax(OP_LOG_SOFTMAX, x, -1);
  softmax(OP_LOG_SOFTMAX, x, 0);
  check_graph(NULL);
}
END_TEST

START_TEST(test_attention_mask_softmax) {
  int s = input(S(3, 2, 6, 6), DT_F32);
  int m = op(OP_CAUSAL_MASK, DT_BOOL, S(2, 6, 6), 0);
  int sc = bin(OP_MUL, s, full(0.125, S(0)));
  int w = op(OP_WHERE, DT_F32, O(s)->shape, 3, m, sc, full(-1e9, S(0)));
  softmax(OP_SOFTMAX, w, -1);
  ck_assert_int_eq(count_kernels(), 1);
  check_graph(NULL);
}
END_TEST

START_TEST(test_layernorm_pattern) {
  int x = input(S(3, 2, 5, 16), DT_F32), g = input(S(1, 16), DT_F32), b = input(S(1, 16), DT_F32);
  int mu = reduce(OP_MEAN, x, -1, true);
  int d = bin(OP_SUB, x, mu);
  int var = reduce(OP_MEAN, bin(OP_MUL, d, d), -1, true);
  int r = un(OP_RSQRT, bin(OP_ADD, var, full(1e-5, S(0))));
  bin(OP_ADD, bin(OP_MUL, bin(OP_MUL, d, r), g), b);
  ck_assert_int_eq(count_kernels(), 1);
  check_graph(NULL);
}
END_TEST

START_TEST(test_cross_entropy) {
  int_hi = 10;
  int logits = input(S(3, 2, 3, 10), DT_F32), t = input(S(2, 2, 3), DT_I32);
  int ce = op(OP_CROSS_ENTROPY, DT_F32, S(0), 2, logits, t);
  int g = full(1.0, S(0));
  int g2 = bin(OP_MUL, g, full(0.5, S(0)));
  op(OP_CE_GRAD, DT_F32, O(logits)->shape, 3, logits, t, g2);
  (void)ce;
  check_graph(NULL);
  int_hi = 4;
}
END_TEST

START_TEST(test_embedding_and_grad) {
  int_hi = 7;
  int idx = input(S(2, 3, 5), DT_I32), w = op(OP_PARAM, DT_F32, S(2, 7, 4), 0);
  O(w)->name = "wte";
  int e = op(OP_EMBEDDING, DT_F32, S(3, 3, 5, 4), 2, idx, w);
  int dy = un(OP_TANH, e);
  int eg = op(OP_EMBEDDING_GRAD, DT_F32, S(2, 7, 4), 2, idx, dy);
  int pg = op(OP_PARAM_GRAD, DT_F32, S(2, 7, 4), 1, eg);
  O(pg)->key = w;
  check_graph(NULL);
  int_hi = 4;
}
END_TEST

/* Enough outer iterations for cg_llvm's lane-parallel form (16 at a time, then the
 * rest one by one): softmax and the attention pattern over rows, column sums (reductions
 * over leading axes), cross-entropy and the embedding gradient; chunks split anywhere. */
START_TEST(test_lanes_wide) {
  int x = input(S(3, 2, 37, 19), DT_F32);
  softmax(OP_SOFTMAX, x, -1);
  softmax(OP_LOG_SOFTMAX, x, -1);
  reduce(OP_SUM, x, 0, false);
  reduce(OP_AMAX, x, 1, true);
  int s = input(S(3, 2, 21, 21), DT_F32);
  int m = op(OP_CAUSAL_MASK, DT_BOOL, S(2, 21, 21), 0);
  int w = op(OP_WHERE, DT_F32, O(s)->shape, 3, m, bin(OP_MUL, s, full(0.125, S(0))), full(-INFINITY, S(0)));
  softmax(OP_SOFTMAX, w, -1);
  int c = input(S(3, 3, 50, 41), DT_F32);
  reduce(OP_SUM, un(OP_TANH, c), 0, false);
  check_graph(NULL);
}
END_TEST

START_TEST(test_lanes_ce_embedding) {
  int_hi = 40;
  int logits = input(S(2, 45, 40), DT_F32), t = input(S(1, 45), DT_I32);
  op(OP_CROSS_ENTROPY, DT_F32, S(0), 2, logits, t);
  op(OP_CE_GRAD, DT_F32, O(logits)->shape, 3, logits, t, full(1.0, S(0)));
  int idx = input(S(2, 3, 5), DT_I32), wt = op(OP_PARAM, DT_F32, S(2, 40, 37), 0);
  O(wt)->name = "wte";
  int e = op(OP_EMBEDDING, DT_F32, S(3, 3, 5, 37), 2, idx, wt);
  int eg = op(OP_EMBEDDING_GRAD, DT_F32, S(2, 40, 37), 2, idx, un(OP_TANH, e));
  int pg = op(OP_PARAM_GRAD, DT_F32, S(2, 40, 37), 1, eg);
  O(pg)->key = wt;
  check_graph(NULL);
  int_hi = 4;
}
END_TEST

/* Lane loops (kernel.h: reductions of 64 or more in block 0, summed by 32 lanes and a
 * pairwise tree, the order the GPU's warps use): row and column reductions, softmax,
 * layernorm and cross-entropy on long rows against the reference, with every split. */
START_TEST(test_lane_loops) {
  int x = input(S(3, 3, 5, 100), DT_F32);
  reduce(OP_SUM, x, -1, true);
  reduce(OP_MEAN, x, -1, false);
  reduce(OP_AMAX, x, -1, true);
  softmax(OP_SOFTMAX, x, -1);
  softmax(OP_LOG_SOFTMAX, x, -1);
  int c = input(S(2, 130, 7), DT_F32);
  reduce(OP_SUM, un(OP_TANH, c), 0, false);
  reduce(OP_AMAX, c, 0, true);
  int y = input(S(2, 6, 96), DT_F32), g = input(S(1, 96), DT_F32);
  int mu = reduce(OP_MEAN, y, -1, true), d = bin(OP_SUB, y, mu);
  int var = reduce(OP_MEAN, bin(OP_MUL, d, d), -1, true);
  bin(OP_MUL, bin(OP_MUL, d, un(OP_RSQRT, bin(OP_ADD, var, full(1e-5, S(0))))), g);
  int_hi = 90;
  int logits = input(S(2, 12, 90), DT_F32), t = input(S(1, 12), DT_I32);
  op(OP_CROSS_ENTROPY, DT_F32, S(0), 2, logits, t);
  op(OP_CE_GRAD, DT_F32, O(logits)->shape, 3, logits, t, full(1.0, S(0)));
  check_graph(NULL);
  int_hi = 4;
}
END_TEST

/* The lane order itself, bit for bit: a row sum of 200 equals p_l = x_l + x_{l+32} + ...,
 * then p_l += p_{l+s} for s = 16 .. 1 (what the GPU computes; the sequential sum differs). */
START_TEST(test_lane_order_bits) {
  int x = input(S(2, 4, 200), DT_F32);
  int s = reduce(OP_SUM, x, -1, false);
  int ops[1] = {s};
  Built b;
  lower(&b, ops, 1, true, 0);
  int64_t sc[MPL_KERNEL_SCALARS] = {0};
  Run r = execute(&b, 1, sc);
  const float *in = r.buf[x], *out = r.buf[s];
  bool differs = false;
  for (int row = 0; row < 4; row++) {
    float p[32], seq = 0.0f;
    for (int k = 0; k < 200; k++) {
      float v = in[row * 200 + k];
      p[k % 32] = k < 32 ? v : p[k % 32] + v;
      seq = seq + v;
    }
    for (int st = 16; st > 0; st /= 2)
      for (int l = 0; l < st; l++) p[l] = p[l] + p[l + st];
    float want = 0.0f + p[0];
    ck_assert_msg(memcmp(&want, &out[row], 4) == 0, "row %d: %a, lane order gives %a", row, (double)out[row], (double)want);
    differs |= memcmp(&seq, &out[row], 4) != 0;
  }
  ck_assert_msg(differs, "the sequential order gives the same bits on every row: the test cannot tell the orders apart");
  run_free(&r);
  free_built(&b);
}
END_TEST

/* The chunked lane order (kernel.h) in C: chunks of KIR_CHUNK (the last to n), each in the
 * lane order, combined as a binary counter, then over m's bits from the lowest. */
static float chunked_sum(const float *x, int64_t n) {
  int64_t m = n / KIR_CHUNK;
  float s[64], R = 0.0f;
  for (int64_t j = 0; j < m; j++) {
    int64_t b = j * KIR_CHUNK, e = j == m - 1 ? n : b + KIR_CHUNK;
    float p[32];
    for (int64_t k = b; k < e; k++) p[k % 32] = k - b < 32 ? x[k] : p[k % 32] + x[k];
    for (int st = 16; st > 0; st /= 2)
      for (int l = 0; l < st; l++) p[l] = p[l] + p[l + st];
    float v = p[0];
    int l = 0;
    for (int64_t c = j; c & 1; c >>= 1, l++) v = s[l] + v;
    s[l] = v;
  }
  bool any = false;
  for (int l = 0; l < 64; l++)
    if ((m >> l) & 1) R = any ? s[l] + R : s[l], any = true;
  return 0.0f + R;
}

/* The sum of x's rows, lowered into b (fused); its op. */
static int row_sum(Built *b, int x) {
  int s = reduce(OP_SUM, x, -1, false), ops[1] = {s};
  lower(b, ops, 1, true, 0);
  return s;
}

/* Long rows (from 2 * KIR_CHUNK = 8192) go in chunks, bit for bit as chunked_sum; the sum
 * of 2^20 copies of 0.1 is then within 1e-6 of the exact one (one accumulator a lane was
 * 2.6e-4 off: each lane added 32768 values in turn). */
START_TEST(test_lane_chunks) {
  const int64_t lens[] = {3 * KIR_CHUNK + 100, 7 * KIR_CHUNK + 5, 2 * KIR_CHUNK};
  int64_t sc[MPL_KERNEL_SCALARS] = {0};
  Built b;
  for (int c = 0; c < 3; c++) {
    int64_t n = lens[c];
    int x = input(S(2, 2, n), DT_F32), s = row_sum(&b, x);
    Run r = execute(&b, 1, sc);
    for (int row = 0; row < 2; row++) {
      const float *in = r.buf[x], *out = r.buf[s];
      float want = chunked_sum(in + row * n, n);
      ck_assert_msg(memcmp(&want, &out[row], 4) == 0, "n %lld row %d: %a, the chunked order gives %a", (long long)n,
                    row, (double)out[row], (double)want);
    }
    run_free(&r);
    free_built(&b);
  }
  int64_t n = 1 << 20;
  int x = input(S(2, 1, n), DT_F32), s = row_sum(&b, x);
  Run r = run_new();
  for (int64_t i = 0; i < n; i++) ((float *)r.buf[x])[i] = 0.1f; /* (run_program keeps what is there) */
  run_built(&r, &b, 1, sc);
  double exact = (double)n * (double)0.1f;
  float got = ((const float *)r.buf[s])[0];
  ck_assert_msg(fabs(got - exact) <= 1e-6 * exact, "sum of 2^20 x 0.1: %.9g, exact %.9g", (double)got, exact);
  run_free(&r);
  free_built(&b);
}
END_TEST

START_TEST(test_dropout) {
  int x = input(S(2, 16, 33), DT_F32);
  int d = un(OP_DROPOUT, un(OP_EXP, x));
  O(d)->value = 0.3, O(d)->key = 5;
  int d2 = un(OP_DROPOUT, x);
  O(d2)->value = 0.0, O(d2)->key = 6;
  RefCtx ctx = {1337, 3, 2};
  check_graph(&ctx); /* the kernels' masks and scale are the reference's, element by element;
                        the reference's own keep rate and 1/(1-p) scale: test_refeval.c */
}
END_TEST

START_TEST(test_shape_ops) {
  int x = input(S(3, 2, 3, 4), DT_F32), y = input(S(3, 2, 2, 4), DT_F32), z = input(S(3, 2, 1, 4), DT_F32);
  int t = op(OP_TRANSPOSE, DT_F32, S(3, 4, 3, 2), 1, x);
  O(t)->axis = 0, O(t)->axis2 = 2;
  un(OP_EXP, t);
  int sl = op(OP_SLICE, DT_F32, S(3, 2, 2, 4), 1, x);
  O(sl)->axis = 1, O(sl)->begin = 1, O(sl)->end = 3;
  un(OP_NEG, sl);
  int pd = op(OP_PAD, DT_F32, S(3, 2, 6, 4), 1, x);
  O(pd)->axis = -2, O(pd)->begin = 2;
  un(OP_ABS, pd);
  int cc = op(OP_CONCAT, DT_F32, S(3, 2, 6, 4), 3, x, y, z);
  O(cc)->axis = 1;
  bin(OP_MUL, cc, cc);
  int v = input(S(2, 1, 5), DT_F32);
  op(OP_EXPAND, DT_F32, S(2, 4, 5), 1, v);
  int w = input(S(3, 2, 3, 4), DT_F32);
  op(OP_SUM_TO, DT_F32, S(1, 4), 1, w);
  op(OP_SUM_TO, DT_F32, S(2, 3, 1), 1, w);
  op(OP_SUM_TO, DT_F32, S(3, 1, 3, 4), 1, un(OP_EXP, w));
  check_graph(NULL);
}
END_TEST

START_TEST(test_reshape_chain_and_alias) {
  int x = input(S(3, 2, 3, 4), DT_F32);
  int r1 = op(OP_RESHAPE, DT_F32, S(2, 6, 4), 1, x);
  int e = un(OP_EXP, r1);
  int r2 = op(OP_RESHAPE, DT_F32, S(3, 2, 3, 4), 1, e);
  int h = op(OP_RESHAPE, DT_F32, S(4, 2, 3, 2, 2), 1, r2); /* split the last dim */
  un(OP_NEG, h);
  int w = input(S(2, 4, 5), DT_F32);
  op(OP_MATMUL, DT_F32, S(2, 6, 5), 2, r1, w); /* reshape as a GEMM operand: an alias */
  check_graph(NULL);
}
END_TEST

/* A chain of reshapes of a fused value read by a GEMM: each link aliases the one before
 * (reshape(reshape(exp(v), 4), 1, 4) @ w once died with "reshape has no buffer"). */
START_TEST(test_reshape_chain_to_gemm) {
  int v = input(S(2, 2, 2), DT_F32), w = input(S(2, 4, 3), DT_F32);
  int r1 = op(OP_RESHAPE, DT_F32, S(1, 4), 1, un(OP_EXP, v));
  int r2 = op(OP_RESHAPE, DT_F32, S(2, 1, 4), 1, r1);
  op(OP_MATMUL, DT_F32, S(2, 1, 3), 2, r2, w);
  int r3 = op(OP_RESHAPE, DT_F32, S(1, 4), 1, un(OP_NEG, v));
  int r4 = op(OP_RESHAPE, DT_F32, S(2, 2, 2), 1, r3);
  op(OP_MATMUL, DT_F32, S(2, 2, 2), 2, r4, r4);
  check_graph(NULL);
}
END_TEST

START_TEST(test_matmuls) {
  int x = input(S(3, 2, 3, 4), DT_F32), w = input(S(2, 4, 5), DT_F32), b = input(S(1, 5), DT_F32);
  int y = op(OP_MATMUL, DT_F32, S(3, 2, 3, 5), 2, x, w);
  un(OP_GELU, bin(OP_ADD, y, b));
  int u = input(S(2, 5, 4), DT_F32);
  int ut = op(OP_TRANSPOSE, DT_F32, S(2, 4, 5), 1, u);
  O(ut)->axis = 0, O(ut)->axis2 = 1;
  op(OP_MATMUL, DT_F32, S(3, 2, 3, 5), 2, x, ut); /* folded into tb */
  int p = input(S(4, 2, 1, 3, 4), DT_F32), q = input(S(4, 1, 2, 4, 5), DT_F32);
  op(OP_MATMUL, DT_F32, S(4, 2, 2, 3, 5), 2, p, q); /* general broadcast: one GEMM per batch */
  int a2 = input(S(2, 6, 3), DT_F32), d2 = input(S(2, 6, 5), DT_F32), wp = op(OP_PARAM, DT_F32, S(2, 3, 5), 0);
  O(wp)->name = "w";
  int mm = op(OP_MATMUL, DT_F32, S(2, 3, 5), 2, a2, d2);
  O(mm)->ta = true;
  int pg = op(OP_PARAM_GRAD, DT_F32, S(2, 3, 5), 1, mm); /* beta = 1 into the accumulator */
  O(pg)->key = wp;
  check_graph(NULL);
}
END_TEST

START_TEST(test_param_grad_accum) {
  int x = input(S(2, 4, 6), DT_F32), wp = op(OP_PARAM, DT_F32, S(2, 4, 6), 0);
  O(wp)->name = "w";
  int pg = op(OP_PARAM_GRAD, DT_F32, S(2, 4, 6), 1, x); /* external input: STEP_ACCUM */
  O(pg)->key = wp;
  int e = un(OP_EXP, x);
  int pg2 = op(OP_PARAM_GRAD, DT_F32, S(2, 4, 6), 1, e); /* folded into the kernel */
  O(pg2)->key = wp, O(pg2)->use = 1;
  un(OP_NEG, e);
  check_graph(NULL);
}
END_TEST

START_TEST(test_creation_ops) {
  int x = input(S(2, 3, 5), DT_F32);
  int ar = op(OP_ARANGE, DT_I32, S(1, 5), 0);
  int af = op(OP_CAST, DT_F32, S(1, 5), 1, ar);
  bin(OP_ADD, x, af);
  full(2.5, S(2, 3, 5)); /* a constant nobody reads: materialised */
  op(OP_CAUSAL_MASK, DT_BOOL, S(2, 4, 4), 0);
  check_graph(NULL);
}
END_TEST

/* ---- v2 ops with kernels of their own (issue 13) ------------------------------------------ */

static int along(OpKind k, DType dt, Shape s, int x, int axis) {
  int id = op(k, dt, s, 1, x);
  O(id)->axis = axis;
  return id;
}

static int i32_full(int v) {
  int id = op(OP_FULL, DT_I32, S(0), 0);
  O(id)->value = v;
  return id;
}

/* Elementwise ops, and argmax, topk, cumsum on long rows (lane loops) and along other axes:
 * ties (floor makes many) go to the lower index, NaN (log of a negative) is the largest. */
START_TEST(test_v2_order_ops) {
  int x = input(S(3, 2, 3, 70), DT_F32), fl = un(OP_FLOOR, x), nan = un(OP_LOG, x);
  un(OP_SIN, x), un(OP_COS, x), un(OP_SILU, x);
  bin(OP_REM, x, full(-0.7, S(0)));
  bin(OP_REM, x, bin(OP_ADD, un(OP_COS, x), full(1.5, S(0))));
  along(OP_ARGMAX, DT_I32, S(2, 2, 3), fl, 2);
  O(along(OP_ARGMAX, DT_I32, S(3, 1, 3, 70), fl, 0))->keepdims = true;
  along(OP_ARGMAX, DT_I32, S(2, 2, 3), nan, 2);
  along(OP_TOPK, DT_I32, S(3, 2, 3, 4), fl, 2);
  along(OP_TOPK, DT_I32, S(3, 2, 3, 2), nan, 2);
  along(OP_TOPK, DT_I32, S(3, 2, 3, 70), x, 1);
  along(OP_CUMSUM, DT_F32, S(3, 2, 3, 70), x, 2);
  along(OP_CUMSUM_REV, DT_F32, S(3, 2, 3, 70), x, 0);
  int ci = input(S(2, 4, 9), DT_I32);
  along(OP_CUMSUM, DT_I32, S(2, 4, 9), ci, 1);
  check_graph(NULL);
}
END_TEST

/* i32 remainders of negative values and by 0 and -1; gather (repeated indices, smaller
 * shapes) and its gradient; one_hot; a 3x3 convolution's patches with stride and padding,
 * and back; the run-time checks' counts. */
START_TEST(test_v2_index_ops) {
  int_hi = 7;
  int a = input(S(2, 6, 8), DT_I32), b = bin(OP_SUB, a, i32_full(3));
  bin(OP_REM, b, a), bin(OP_REM, a, b), bin(OP_REM, b, i32_full(-4));
  int x = input(S(3, 3, 7, 9), DT_F32), idx = input(S(3, 3, 5, 9), DT_I32), idx2 = input(S(3, 2, 7, 4), DT_I32);
  O(op(OP_GATHER, DT_F32, S(3, 3, 5, 9), 2, x, idx))->axis = 1;
  int g2 = op(OP_GATHER, DT_F32, S(3, 2, 7, 4), 2, x, idx2);
  O(g2)->axis = 2;
  int gg = op(OP_GATHER_GRAD, DT_F32, S(3, 3, 7, 9), 2, idx2, un(OP_TANH, g2));
  O(gg)->axis = 2;
  op(OP_ONE_HOT, DT_F32, S(4, 2, 7, 4, 5), 1, idx2);
  int img = input(S(4, 2, 3, 6, 5), DT_F32);
  int cols = op(OP_IM2COL, DT_F32, S(3, 2, 27, 9), 1, img);
  O(cols)->axis = O(cols)->axis2 = 3, O(cols)->begin = 2, O(cols)->end = 1;
  int back = op(OP_COL2IM, DT_F32, S(4, 2, 3, 6, 5), 1, un(OP_EXP, cols));
  O(back)->axis = O(back)->axis2 = 3, O(back)->begin = 2, O(back)->end = 1;
  int ck = op(OP_CHECK, DT_I32, S(0), 1, idx);
  O(ck)->key = OP_GATHER, O(ck)->value = 5;
  O(op(OP_CHECK, DT_I32, S(0), 1, b))->key = OP_REM;
  check_graph(NULL);
  int_hi = 4;
}
END_TEST

/* ---- the builder's index arithmetic (pass 113) ------------------------------------
 * Random index expressions over the outer index x in [0, NX) and a loop's index y in
 * [0, NY), built through kb_bin / kb_select (which simplify with known ranges and record
 * each value's range [0, ub); pure instructions are shared), evaluated here instruction
 * by instruction over every (x, y) and compared with the expression's value computed
 * directly; every value with a known range must lie in it. Five mutants of the builder (a
 * division's range rounded down, a split where the constant does not divide, a quotient
 * folded to 0 one early, a re-linearisation with another divisor, selects shared that
 * differ in their last operand) passed every other suite but random seeds. */
enum { IX_NX = 24, IX_NY = 7, IX_N = IX_NX * IX_NY };

typedef struct IxGen {
  KBuilder *b;
  int x, y;
  uint64_t rng;
} IxGen;

static uint64_t ix_rand(IxGen *g, uint64_t n) {
  g->rng ^= g->rng << 13, g->rng ^= g->rng >> 7, g->rng ^= g->rng << 17;
  return g->rng % n;
}

/* An expression of depth <= d: its instruction id, its value at each (x, y) in v. */
static int ix_gen(IxGen *g, int d, int64_t *v) {
  int64_t a[IX_N], c;
  int kind = d <= 0 ? (int)ix_rand(g, 3) : 3 + (int)ix_rand(g, 9);
  switch (kind) {
  case 0: for (int i = 0; i < IX_N; i++) v[i] = i / IX_NY; return g->x;
  case 1: for (int i = 0; i < IX_N; i++) v[i] = i % IX_NY; return g->y;
  case 2: c = (int64_t)ix_rand(g, 13); for (int i = 0; i < IX_N; i++) v[i] = c; return kb_int(g->b, KT_I64, c);
  case 3: { /* e1 + e2 */
    int p = ix_gen(g, d - 1, a), q = ix_gen(g, d - 1, v);
    for (int i = 0; i < IX_N; i++) v[i] += a[i];
    return kb_bin(g->b, KI_ADD, KT_I64, p, q);
  }
  case 4: { /* e1 * c + e2: a linearised index */
    int p = ix_gen(g, d - 1, a), q = ix_gen(g, d - 1, v);
    c = (int64_t)ix_rand(g, 9);
    for (int i = 0; i < IX_N; i++) v[i] += a[i] * c;
    return kb_bin(g->b, KI_ADD, KT_I64, kb_bin(g->b, KI_MUL, KT_I64, p, kb_int(g->b, KT_I64, c)), q);
  }
  case 5: { /* e * c */
    int p = ix_gen(g, d - 1, v);
    c = (int64_t)ix_rand(g, 9);
    for (int i = 0; i < IX_N; i++) v[i] *= c;
    return kb_bin(g->b, KI_MUL, KT_I64, p, kb_int(g->b, KT_I64, c));
  }
  case 6: case 7: { /* e / c or e % c */
    int p = ix_gen(g, d - 1, v);
    c = 1 + (int64_t)ix_rand(g, 12);
    for (int i = 0; i < IX_N; i++) v[i] = kind == 6 ? v[i] / c : v[i] % c;
    return kb_bin(g->b, kind == 6 ? KI_DIV : KI_REM, KT_I64, p, kb_int(g->b, KT_I64, c));
  }
  case 8: { /* (e / c) * c2 + e % c2: re-linearised when c2 == c (half the time) */
    int p = ix_gen(g, d - 1, v);
    c = 1 + (int64_t)ix_rand(g, 8);
    int64_t c2 = ix_rand(g, 2) ? c : 1 + (int64_t)ix_rand(g, 8);
    int k = kb_int(g->b, KT_I64, c), k2 = kb_int(g->b, KT_I64, c2);
    for (int i = 0; i < IX_N; i++) v[i] = v[i] / c * c2 + v[i] % c2;
    return kb_bin(g->b, KI_ADD, KT_I64, kb_bin(g->b, KI_MUL, KT_I64, kb_bin(g->b, KI_DIV, KT_I64, p, k), k2),
                  kb_bin(g->b, KI_REM, KT_I64, p, k2));
  }
  case 9: { /* a clamp: min(max(e, 0), c) */
    int p = ix_gen(g, d - 1, v);
    c = (int64_t)ix_rand(g, 20);
    for (int i = 0; i < IX_N; i++) v[i] = v[i] < c ? v[i] : c;
    return kb_bin(g->b, KI_MIN, KT_I64, kb_bin(g->b, KI_MAX, KT_I64, p, kb_int(g->b, KT_I64, 0)), kb_int(g->b, KT_I64, c));
  }
  default: { /* e1 < c ? e2 : e3, and (half the time) plus e1 < c ? e2 : e4: selects that differ in
               their last operand alone */
    int64_t t[IX_N], u[IX_N];
    int p = ix_gen(g, d - 1, a), q = ix_gen(g, d - 1, t), r = ix_gen(g, d - 1, v);
    c = (int64_t)ix_rand(g, 30);
    for (int i = 0; i < IX_N; i++) v[i] = a[i] < c ? t[i] : v[i];
    int lt = kb_bin(g->b, KI_LT, KT_BOOL, p, kb_int(g->b, KT_I64, c)), s1 = kb_select(g->b, lt, q, r);
    if (ix_rand(g, 2)) return s1;
    int r2 = ix_gen(g, d - 1, u);
    for (int i = 0; i < IX_N; i++) v[i] += a[i] < c ? t[i] : u[i];
    return kb_bin(g->b, KI_ADD, KT_I64, s1, kb_select(g->b, lt, q, r2));
  }
  }
}

static long ix_ranged; /* values checked against a known range */

/* Instruction id's value at (x, y), each value checked against its known range. */
static int64_t ix_eval(const Kernel *k, int id, int64_t x, int64_t y, int loop) {
  const KInstr *in = &k->ins[id];
  int64_t a = in->a >= 0 && in->op != KI_LOOP ? ix_eval(k, in->a, x, y, loop) : 0;
  int64_t b = in->b >= 0 ? ix_eval(k, in->b, x, y, loop) : 0, r;
  switch (in->op) {
  case KI_OUTER: r = x; break;
  case KI_LOOPVAR: ck_assert_int_eq(in->imm, loop); r = y; break;
  case KI_CONST: r = in->imm; break;
  case KI_ADD: r = (int64_t)((uint64_t)a + (uint64_t)b); break;
  case KI_SUB: r = (int64_t)((uint64_t)a - (uint64_t)b); break;
  case KI_MUL: r = (int64_t)((uint64_t)a * (uint64_t)b); break;
  case KI_DIV: ck_assert_int_gt(b, 0); r = (int64_t)((uint64_t)a / (uint64_t)b); break;
  case KI_REM: ck_assert_int_gt(b, 0); r = (int64_t)((uint64_t)a % (uint64_t)b); break;
  case KI_MIN: r = a < b ? a : b; break;
  case KI_MAX: r = a > b ? a : b; break;
  case KI_LT: r = a < b; break;
  case KI_SELECT: r = a ? b : ix_eval(k, in->c, x, y, loop); break;
  default: ck_abort_msg("index expression: unexpected %s", ki_name(in->op)); return 0;
  }
  if (in->type == KT_I64 && in->ub) ix_ranged++;
  if (in->type == KT_I64 && in->ub)
    ck_assert_msg(r >= 0 && r < in->ub, "%%%d %s = %lld at x %lld, y %lld: outside its range [0, %lld)", id,
                  ki_name(in->op), (long long)r, (long long)x, (long long)y, (long long)in->ub);
  return r;
}

START_TEST(test_index_simplify) {
  ix_ranged = 0;
  for (int seed = 1; seed <= 600; seed++) {
    KBuilder *b = kb_new(&arena, "ix", IX_NX);
    int loop = kb_loop_begin(b, IX_NY, KR_NONE, KT_VOID, -1, 0);
    IxGen g = {b, kb_outer(b), kb_loopvar(b, loop), 0x9e3779b97f4a7c15ull * (uint64_t)seed};
    int64_t want[IX_N];
    int id = ix_gen(&g, 1 + seed % 4, want);
    const Kernel *k = kb_kernel(b);
    for (int i = 0; i < IX_N; i++) {
      int64_t got = ix_eval(k, id, i / IX_NY, i % IX_NY, loop);
      ck_assert_msg(got == want[i], "seed %d: the expression is %lld at x %d, y %d, not %lld", seed, (long long)got,
                    i / IX_NY, i % IX_NY, (long long)want[i]);
    }
    kb_loop_end(b, loop, -1);
    kb_finish(b);
  }
  ck_assert_int_gt(ix_ranged, 100000); /* (952,154: most values have a known range) */
}
END_TEST

/* Hash-consing: 3,000 selects (and sums) that differ in their last operand alone stay 3,000
   instructions, and asking again for each gives it back (pass 113's K09: an equality that
   ignored a select's third operand merged the selects whose probe chains met). */
START_TEST(test_hash_cons) {
  enum { N = 3000 };
  static int sel[N], sum[N];
  KBuilder *b = kb_new(&arena, "hc", 8);
  int x = kb_outer(b), c = kb_bin(b, KI_LT, KT_BOOL, x, kb_int(b, KT_I64, 5));
  for (int i = 0; i < N; i++) {
    int y = kb_int(b, KT_I64, 1000 + i);
    sel[i] = kb_select(b, c, x, y);
    sum[i] = kb_bin(b, KI_ADD, KT_I64, x, y);
  }
  const Kernel *k = kb_kernel(b);
  for (int i = 0; i < N; i++) {
    int y = kb_int(b, KT_I64, 1000 + i);
    ck_assert_int_eq(kb_select(b, c, x, y), sel[i]);
    ck_assert_int_eq(kb_bin(b, KI_ADD, KT_I64, x, y), sum[i]);
    const KInstr *s = &k->ins[sel[i]], *a = &k->ins[sum[i]];
    ck_assert_msg(s->op == KI_SELECT && s->a == c && s->b == x && s->c == y, "select %d is %%%d: %s(%d, %d, %d)", i,
                  sel[i], ki_name(s->op), s->a, s->b, s->c);
    ck_assert_msg(a->op == KI_ADD && a->a == x && a->b == y, "sum %d is %%%d", i, sum[i]);
  }
  kb_finish(b);
}
END_TEST

START_TEST(test_dump_and_llvm_ir) {
  int x = input(S(2, 4, 8), DT_F32);
  softmax(OP_SOFTMAX, un(OP_EXP, x), -1);
  int ops[] = {1, 2};
  KernelSet *ks = kset_new(&arena);
  Program *p = fuse_program(&arena, G, ops, 2, ks);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  kir_dump(f, ks, p);
  cg_llvm_dump_ir(f, ks);
  fclose(f);
  ck_assert(strstr(buf, "loop.max.f32") != NULL);
  ck_assert(strstr(buf, "loop.sum.f32") != NULL);
  ck_assert(strstr(buf, "step 0: kernel") != NULL);
  ck_assert(strstr(buf, "define void @k0_softmax") != NULL);
  free(buf);
}
END_TEST

/* Bitcode of one empty kernel for the given triple and data layout (NULL: the host's). */
static void foreign_bitcode(const char *triple, const char *layout, void **bc, size_t *len) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("foreign", ctx);
  char *host = LLVMGetDefaultTargetTriple();
  LLVMSetTarget(m, triple ? triple : host);
  LLVMDisposeMessage(host);
  LLVMSetDataLayout(m, layout);
  LLVMTypeRef fn = LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, LLVMAddFunction(m, "k0", fn), "entry"));
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
  LLVMMemoryBufferRef mb = LLVMWriteBitcodeToMemoryBuffer(m);
  *len = LLVMGetBufferSize(mb);
  *bc = malloc(*len);
  memcpy(*bc, LLVMGetBufferStart(mb), *len);
  LLVMDisposeMemoryBuffer(mb);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
}

/* A job's kernels from another machine are refused with a message: compiled for another
 * architecture (named), or with a data layout other than the host's (named; the module was
 * once freed twice on this path, a crash). */
START_TEST(test_jit_foreign_kernels) {
  void *bc;
  size_t len;
  char err[1024] = "";
  foreign_bitcode("aarch64-unknown-linux-gnu", "e-m:e-i8:8:32-i16:16:32-i64:64-i128:128-n32:64-S128", &bc, &len);
  MplJit *j = mpl_jit_load(bc, len, err, sizeof err);
  free(bc);
  ck_assert_ptr_null(j);
  ck_assert_msg(strstr(err, "compiled for aarch64-unknown-linux-gnu") != NULL, "%s", err);
  err[0] = 0;
  foreign_bitcode(NULL, "E-m:e-p:32:32-i64:64-n32-S128", &bc, &len); /* big-endian, 32-bit pointers */
  j = mpl_jit_load(bc, len, err, sizeof err);
  free(bc);
  ck_assert_ptr_null(j);
  ck_assert_msg(strstr(err, "data layout E-m:e-p:32:32-i64:64-n32-S128, and this machine's is e-"), "%s", err);
}
END_TEST

START_TEST(test_dedup_identical_kernels) {
  int x = input(S(2, 4, 8), DT_F32), y = input(S(2, 4, 8), DT_F32);
  softmax(OP_SOFTMAX, x, -1);
  softmax(OP_SOFTMAX, y, -1);
  int ops[] = {2, 3};
  KernelSet *ks = kset_new(&arena);
  Program *p = fuse_program(&arena, G, ops, 2, ks);
  ck_assert_int_eq(p->nsteps, 2);
  ck_assert_int_eq(ks->n, 1);
  ck_assert_int_eq(p->steps[0].kernel, p->steps[1].kernel);
}
END_TEST

static Suite *kernels_suite(void) {
  Suite *s = suite_create("kernels");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_linear_gelu_chain);
  tcase_add_test(tc, test_unary_ops);
  tcase_add_test(tc, test_exp_tanh_ulp);
  tcase_add_test(tc, test_binary_broadcast);
  tcase_add_test(tc, test_compare_where_cast);
  tcase_add_test(tc, test_grads_elementwise);
  tcase_add_test(tc, test_reductions_every_axis);
  tcase_add_test(tc, test_reduction_prologue_epilogue);
  tcase_add_test(tc, test_softmax_axes);
  tcase_add_test(tc, test_attention_mask_softmax);
  tcase_add_test(tc, test_layernorm_pattern);
  tcase_add_test(tc, test_cross_entropy);
  tcase_add_test(tc, test_embedding_and_grad);
  tcase_add_test(tc, test_lanes_wide);
  tcase_add_test(tc, test_lanes_ce_embedding);
  tcase_add_test(tc, test_lane_loops);
  tcase_add_test(tc, test_lane_order_bits);
  tcase_add_test(tc, test_dropout);
  tcase_add_test(tc, test_shape_ops);
  tcase_add_test(tc, test_index_simplify);
  tcase_add_test(tc, test_hash_cons);
  tcase_add_test(tc, test_reshape_chain_and_alias);
  tcase_add_test(tc, test_reshape_chain_to_gemm);
  tcase_add_test(tc, test_matmuls);
  tcase_add_test(tc, test_param_grad_accum);
  tcase_add_test(tc, test_creation_ops);
  tcase_add_test(tc, test_v2_order_ops);
  tcase_add_test(tc, test_v2_index_ops);
  tcase_add_test(tc, test_dump_and_llvm_ir);
  tcase_add_test(tc, test_dedup_identical_kernels);
  tcase_add_test(tc, test_jit_foreign_kernels);
  tcase_add_test(tc, test_lane_chunks);
  tcase_add_test(tc, test_zero_and_nan_edges);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(kernels_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
