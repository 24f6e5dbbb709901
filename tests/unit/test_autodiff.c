/*
 * test_autodiff.c — every vector-Jacobian rule of autodiff.c against central finite
 * differences computed with the reference evaluator, on random shapes.
 *
 * Each case builds leaves -> op -> loss = sum(op(...) * R), R a random INPUT (not
 * differentiated), runs ad_backward, evaluates the whole graph with ref_eval and
 * compares the gradient of every float PARAM (the sum of its PARAM_GRAD sinks in use
 * order) with (f(x+h) - f(x-h)) / 2h, h = 1e-6, in float64. Shapes and values come
 * from a counter-based PRNG with fixed seeds, so every run checks the same cases.
 */
#include "compiler/autodiff.h"
#include "runtime/mpl_rng.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAXOPS = 2048, TRIALS = 8 };

/* ---- a tiny deterministic PRNG ------------------------------------------------ */

typedef struct Rng {
  uint64_t state;
} Rng;

static uint64_t rng_u64(Rng *r) { return mpl_mix64(r->state++); }
static double rng_unif(Rng *r, double lo, double hi) { return lo + (hi - lo) * mpl_uniform(rng_u64(r), 0); }
static int rng_int(Rng *r, int lo, int hi) { return lo + (int)(rng_u64(r) % (uint64_t)(hi - lo + 1)); }

/* ---- graph building ----------------------------------------------------------- */

/* Where a leaf's random values lie: away from the kinks and poles of the ops under test. */
typedef enum Domain { DOM_ANY, DOM_POS, DOM_NONZERO } Domain;

typedef struct Tg {
  Arena arena;
  Graph *g;
  double *data[MAXOPS]; /* values of INPUT and PARAM leaves */
  Rng rng;
  RefCtx ctx;
} Tg;

static Tg *tg_new(uint64_t seed) {
  Tg *t = calloc(1, sizeof *t);
  arena_init(&t->arena);
  t->g = graph_new(&t->arena);
  t->rng.state = seed * 0x9E3779B97F4A7C15ull + 1;
  t->ctx = (RefCtx){42, 3, 1};
  return t;
}

static void tg_free(Tg *t) {
  for (int i = 0; i < MAXOPS; i++) free(t->data[i]);
  arena_free(&t->arena);
  free(t);
}

static Shape mkshape(int rank, const int64_t *d) {
  Shape s = {.rank = rank};
  for (int i = 0; i < rank; i++) s.d[i] = d[i];
  return s;
}
#define SH(...) mkshape((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
static const Shape SCALAR = {0};

static Op *O(Tg *t, int id) { return t->g->ops[id]; }

static int mk(Tg *t, OpKind k, DType dt, Shape s, int nin, const int *in) {
  Op *op = graph_add(t->g, k, nin, in, (Loc){"t.mpl", 1, 1});
  op->shape = s;
  op->dtype = dt;
  return op->id;
}
#define NARGS(...) ((int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)))
#define OPF(t, k, s, ...) mk(t, k, DT_F32, s, NARGS(__VA_ARGS__), (int[]){__VA_ARGS__})

static double rand_in(Rng *r, Domain dom) {
  double u = rng_unif(r, -1.0, 1.0);
  if (dom == DOM_POS) return 0.5 + 1.5 * (u + 1.0) / 2.0;
  if (dom == DOM_NONZERO) return u < 0 ? u - 0.2 : u + 0.2;
  return u;
}

/* A leaf (INPUT or PARAM) of shape s with random values from dom. */
static int leaf(Tg *t, OpKind k, DType dt, Shape s, Domain dom) {
  int id = mk(t, k, dt, s, 0, NULL);
  O(t, id)->name = arena_printf(&t->arena, "leaf%d", id);
  int64_t n = shape_numel(&s);
  t->data[id] = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) t->data[id][i] = rand_in(&t->rng, dom);
  return id;
}
static int param(Tg *t, Shape s, Domain dom) { return leaf(t, OP_PARAM, DT_F32, s, dom); }

/* An integer INPUT with values in [0, hi). */
static int int_input(Tg *t, Shape s, int hi) {
  int id = leaf(t, OP_INPUT, DT_I32, s, DOM_ANY);
  for (int64_t i = 0; i < shape_numel(&s); i++) t->data[id][i] = rng_int(&t->rng, 0, hi - 1);
  return id;
}

/* loss = sum(y * R), R a random INPUT of y's shape and dtype. */
static int finish_loss(Tg *t, int y) {
  Shape s = O(t, y)->shape;
  DType dt = O(t, y)->dtype;
  int r = leaf(t, OP_INPUT, dt, s, DOM_ANY);
  int m = mk(t, OP_MUL, dt, s, 2, (int[]){y, r});
  int l = mk(t, OP_SUM, dt, SCALAR, 1, &m);
  O(t, l)->axis = AXIS_ALL;
  t->g->loss = l;
  return l;
}

/* ---- random shapes ---------------------------------------------------------------- */

static Shape rand_shape(Rng *r, int minrank, int maxrank, int maxd) {
  Shape s = {.rank = rng_int(r, minrank, maxrank)};
  for (int i = 0; i < s.rank; i++) s.d[i] = rng_int(r, 1, maxd);
  return s;
}

/* A shape that broadcasts to out: some leading dims dropped, some dims set to 1. */
static Shape bcast_operand(Rng *r, Shape out) {
  Shape s = {.rank = rng_int(r, 0, out.rank)};
  if (rng_int(r, 0, 2) == 0) s.rank = out.rank;
  for (int i = 0; i < s.rank; i++) {
    s.d[i] = out.d[out.rank - s.rank + i];
    if (rng_int(r, 0, 2) == 0) s.d[i] = 1;
  }
  return s;
}

/* ---- the check ------------------------------------------------------------------------ */

static double eval_loss(Tg *t, int nfwd) {
  Graph fg = *t->g;
  fg.nops = nfwd;
  double **v = calloc((size_t)nfwd, sizeof *v);
  for (int i = 0; i < nfwd; i++) v[i] = t->data[i];
  ref_eval(&fg, v, &t->ctx);
  double l = v[t->g->loss][0];
  ref_free(&fg, v);
  free(v);
  return l;
}

/* Sum of the PARAM_GRAD sinks of param p in use order; checks uses are 0, 1, ... */
static double *param_grad(Tg *t, double **v, int p, int *nuses) {
  int64_t n = shape_numel(&O(t, p)->shape);
  double *gsum = calloc((size_t)(n ? n : 1), sizeof(double));
  int k = 0;
  for (bool found = true; found; k++) {
    found = false;
    for (int i = 0; i < t->g->nops; i++) {
      const Op *op = O(t, i);
      if (op->kind != OP_PARAM_GRAD || op->key != p || op->use != k) continue;
      ck_assert_msg(!found, "param %%%d has two sinks with use %d", p, k);
      found = true;
      for (int64_t e = 0; e < n; e++) gsum[e] += v[i][e];
    }
    if (!found) break;
  }
  for (int i = 0; i < t->g->nops; i++)
    if (O(t, i)->kind == OP_PARAM_GRAD && O(t, i)->key == p) ck_assert_int_lt(O(t, i)->use, k);
  *nuses = k;
  return gsum;
}

static void compare(const char *what, int id, int64_t e, double an, double num) {
  double err = fabs(an - num), scale = fmax(fabs(an), fabs(num));
  ck_assert_msg(err <= 1e-6 * scale + 1e-8, "%s: leaf %%%d element %lld: analytic %.12g, numeric %.12g", what, id,
                (long long)e, an, num);
}

/* Finite differences of the loss with respect to element e of leaf id. */
static double numeric_grad(Tg *t, int nfwd, int id, int64_t e) {
  const double h = 1e-6;
  double x = t->data[id][e];
  t->data[id][e] = x + h;
  double fp = eval_loss(t, nfwd);
  t->data[id][e] = x - h;
  double fm = eval_loss(t, nfwd);
  t->data[id][e] = x;
  return (fp - fm) / (2 * h);
}

/*
 * Differentiates t's graph and checks every float PARAM (and, when wrt is given, the
 * marked leaves through grad_of) against finite differences. Returns the number of
 * PARAM_GRAD sinks of the last param checked (for tests that count uses).
 */
static void check_grads_wrt(Tg *t, const char *what, const bool *wrt) {
  Graph *g = t->g;
  int nfwd = g->nops;
  int *grad_of = malloc(sizeof(int) * (size_t)nfwd);
  Diag d = {.arena = &t->arena, .out = stderr, .max_errors = 50};
  ck_assert_int_eq(ad_backward_ex(g, &d, wrt, grad_of), 0);
  double **v = calloc((size_t)g->nops, sizeof *v);
  for (int i = 0; i < nfwd; i++) v[i] = t->data[i];
  ref_eval(g, v, &t->ctx);
  for (int id = 0; id < nfwd; id++) {
    const Op *op = O(t, id);
    bool want = wrt ? wrt[id] : op->kind == OP_PARAM;
    if (!want || op->dtype != DT_F32) continue;
    int nuses = 0;
    double *an = op->kind == OP_PARAM ? param_grad(t, v, id, &nuses) : NULL;
    if (!an) ck_assert_int_ge(grad_of[id], 0);
    for (int64_t e = 0; e < shape_numel(&op->shape); e++)
      compare(what, id, e, an ? an[e] : v[grad_of[id]][e], numeric_grad(t, nfwd, id, e));
    free(an);
  }
  ref_free(g, v);
  free(v);
  free(grad_of);
}
static void check_grads(Tg *t, const char *what) { check_grads_wrt(t, what, NULL); }

/* ---- elementwise ---------------------------------------------------------------------- */

typedef struct UnaryCase {
  OpKind kind;
  Domain dom;
  double value;
} UnaryCase;

static const UnaryCase unary_cases[] = {
    {OP_NEG, DOM_ANY, 0},     {OP_EXP, DOM_ANY, 0},      {OP_LOG, DOM_POS, 0},  {OP_SQRT, DOM_POS, 0},
    {OP_RSQRT, DOM_POS, 0},   {OP_TANH, DOM_ANY, 0},     {OP_SIGMOID, DOM_ANY, 0}, {OP_RELU, DOM_NONZERO, 0},
    {OP_GELU, DOM_ANY, 0},    {OP_ABS, DOM_NONZERO, 0},  {OP_POW, DOM_POS, 2.5},   {OP_POW, DOM_ANY, 3.0},
    {OP_CAST, DOM_ANY, 0},
    {OP_SIN, DOM_ANY, 0},     {OP_COS, DOM_ANY, 0},      {OP_SILU, DOM_ANY, 0}, /* v2 (issue 13) */
};

START_TEST(test_unary) {
  const UnaryCase *c = &unary_cases[_i];
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(100 * (uint64_t)_i + (uint64_t)trial);
    Shape s = rand_shape(&t->rng, 0, 3, 4);
    int x = param(t, s, c->dom);
    int y = mk(t, c->kind, c->kind == OP_CAST ? DT_BF16 : DT_F32, s, 1, &x);
    O(t, y)->value = c->value;
    finish_loss(t, y);
    check_grads(t, op_name(c->kind));
    tg_free(t);
  }
}
END_TEST

/* An elementwise op whose input is broadcast to a larger output. */
START_TEST(test_unary_broadcast) {
  Tg *t = tg_new(7);
  int x = param(t, SH(3, 1), DOM_ANY);
  int y = OPF(t, OP_TANH, SH(2, 3, 4), x);
  finish_loss(t, y);
  check_grads(t, "tanh broadcast");
  tg_free(t);
}
END_TEST

typedef struct BinaryCase {
  OpKind kind;
  Domain dom0, dom1;
} BinaryCase;

static const BinaryCase binary_cases[] = {
    {OP_ADD, DOM_ANY, DOM_ANY},     {OP_SUB, DOM_ANY, DOM_ANY},     {OP_MUL, DOM_ANY, DOM_ANY},
    {OP_DIV, DOM_ANY, DOM_NONZERO}, {OP_MAXIMUM, DOM_ANY, DOM_ANY}, {OP_MINIMUM, DOM_ANY, DOM_ANY},
    {OP_GELU_GRAD, DOM_ANY, DOM_ANY}, {OP_RELU_GRAD, DOM_NONZERO, DOM_ANY},
    {OP_REM, DOM_ANY, DOM_NONZERO}, /* v2 (issue 13): (1, -floor(a / b)) */
};

START_TEST(test_binary) {
  const BinaryCase *c = &binary_cases[_i];
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(1000 + 100 * (uint64_t)_i + (uint64_t)trial);
    Shape out = rand_shape(&t->rng, 0, 4, 3), sa = bcast_operand(&t->rng, out), sb = bcast_operand(&t->rng, out);
    Shape bs;
    ck_assert(shape_broadcast(&sa, &sb, &bs));
    if (trial == 0) sa = out; /* both directions of broadcasting, and none */
    if (trial == 1) sb = out;
    shape_broadcast(&sa, &sb, &bs);
    int a = param(t, sa, c->dom0), b = param(t, sb, c->dom1);
    int y = OPF(t, c->kind, bs, a, b);
    finish_loss(t, y);
    check_grads(t, op_name(c->kind));
    tg_free(t);
  }
}
END_TEST

/* One value in both slots of one op: two contributions from one consumer. */
START_TEST(test_same_input_twice) {
  static const OpKind kinds[] = {OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MAXIMUM};
  for (int k = 0; k < 5; k++) {
    Tg *t = tg_new(77 + (uint64_t)k);
    int x = param(t, SH(2, 3), DOM_POS);
    int y = OPF(t, kinds[k], SH(2, 3), x, x);
    finish_loss(t, y);
    check_grads(t, "same input twice");
    tg_free(t);
  }
}
END_TEST

START_TEST(test_where) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(3000 + (uint64_t)trial);
    Shape out = rand_shape(&t->rng, 0, 3, 3);
    Shape sm = bcast_operand(&t->rng, out), sa = bcast_operand(&t->rng, out), sb = bcast_operand(&t->rng, out);
    Shape s1, s2;
    shape_broadcast(&sm, &sa, &s1);
    shape_broadcast(&s1, &sb, &s2);
    int m = leaf(t, OP_INPUT, DT_BOOL, sm, DOM_ANY);
    for (int64_t i = 0; i < shape_numel(&sm); i++) t->data[m][i] = rng_int(&t->rng, 0, 1);
    int a = param(t, sa, DOM_ANY), b = param(t, sb, DOM_ANY);
    int y = OPF(t, OP_WHERE, s2, m, a, b);
    finish_loss(t, y);
    check_grads(t, "where");
    tg_free(t);
  }
}
END_TEST

/* ---- reductions --------------------------------------------------------------------------- */

static Shape reduced_shape(Shape s, int axis, bool keepdims) {
  if (axis == AXIS_ALL) {
    for (int i = 0; i < s.rank; i++) s.d[i] = 1;
    if (!keepdims) s.rank = 0;
    return s;
  }
  int a = axis < 0 ? axis + s.rank : axis;
  if (keepdims) {
    s.d[a] = 1;
    return s;
  }
  for (int i = a; i + 1 < s.rank; i++) s.d[i] = s.d[i + 1];
  s.rank--;
  return s;
}

START_TEST(test_reduce) {
  static const OpKind kinds[] = {OP_SUM, OP_MEAN, OP_AMAX};
  for (int trial = 0; trial < 3 * TRIALS; trial++) {
    Tg *t = tg_new(4000 + 100 * (uint64_t)_i + (uint64_t)trial);
    Shape s = rand_shape(&t->rng, 1, 4, 4);
    int axis = rng_int(&t->rng, -s.rank, s.rank);
    if (axis == s.rank) axis = AXIS_ALL;
    bool keep = rng_int(&t->rng, 0, 1);
    int x = param(t, s, DOM_ANY);
    int y = OPF(t, kinds[_i], reduced_shape(s, axis, keep), x);
    O(t, y)->axis = axis;
    O(t, y)->keepdims = keep;
    finish_loss(t, y);
    check_grads(t, op_name(kinds[_i]));
    tg_free(t);
  }
}
END_TEST

/* amax with ties: the gradient is split evenly among them (checked by hand). */
START_TEST(test_amax_ties) {
  Tg *t = tg_new(5);
  int x = param(t, SH(2, 3), DOM_ANY);
  double v[] = {1, 3, 3, 2, 0, -1};
  memcpy(t->data[x], v, sizeof v);
  int y = OPF(t, OP_AMAX, SH(2), x);
  O(t, y)->axis = 1;
  int l = OPF(t, OP_SUM, SCALAR, y);
  O(t, l)->axis = AXIS_ALL;
  t->g->loss = l;
  Diag d = {.arena = &t->arena, .out = stderr, .max_errors = 50};
  ck_assert_int_eq(ad_backward(t->g, &d), 0);
  double **vals = calloc((size_t)t->g->nops, sizeof *vals);
  for (int i = 0; i <= x; i++) vals[i] = t->data[i];
  ref_eval(t->g, vals, NULL);
  int n;
  double *gr = param_grad(t, vals, x, &n), want[] = {0, 0.5, 0.5, 1, 0, 0};
  ck_assert_int_eq(n, 1);
  for (int i = 0; i < 6; i++) ck_assert_double_eq_tol(gr[i], want[i], 1e-15);
  free(gr);
  ref_free(t->g, vals);
  free(vals);
  tg_free(t);
}
END_TEST

START_TEST(test_softmax) {
  for (int trial = 0; trial < 2 * TRIALS; trial++) {
    Tg *t = tg_new(5000 + 100 * (uint64_t)_i + (uint64_t)trial);
    Shape s = rand_shape(&t->rng, 1, 3, 4);
    int x = param(t, s, DOM_ANY);
    int y = OPF(t, _i ? OP_LOG_SOFTMAX : OP_SOFTMAX, s, x);
    O(t, y)->axis = rng_int(&t->rng, -s.rank, s.rank - 1);
    finish_loss(t, y);
    check_grads(t, _i ? "log_softmax" : "softmax");
    tg_free(t);
  }
}
END_TEST

/* ---- shape ops ------------------------------------------------------------------------------ */

START_TEST(test_reshape_transpose) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(6000 + (uint64_t)trial);
    Shape s = rand_shape(&t->rng, 2, 4, 3);
    int x = param(t, s, DOM_ANY);
    Shape rs = {.rank = s.rank}; /* the dims reversed: the same element count */
    for (int i = 0; i < s.rank; i++) rs.d[i] = s.d[s.rank - 1 - i];
    if (trial % 2) rs = SH(shape_numel(&s));
    int r = OPF(t, OP_RESHAPE, rs, x);
    int a = rng_int(&t->rng, 0, s.rank - 1), b = (a + rng_int(&t->rng, 1, s.rank - 1)) % s.rank;
    Shape ts = s;
    ts.d[a] = s.d[b];
    ts.d[b] = s.d[a];
    int x2 = param(t, s, DOM_ANY);
    int tr = OPF(t, OP_TRANSPOSE, ts, x2);
    O(t, tr)->axis = a;
    O(t, tr)->axis2 = b;
    int y = OPF(t, OP_ADD, rs, r, OPF(t, OP_RESHAPE, rs, OPF(t, OP_TANH, ts, tr)));
    finish_loss(t, y);
    check_grads(t, "reshape/transpose");
    tg_free(t);
  }
}
END_TEST

START_TEST(test_slice_pad) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(7000 + (uint64_t)trial);
    Shape s = rand_shape(&t->rng, 1, 3, 5);
    int axis = rng_int(&t->rng, 0, s.rank - 1);
    int64_t b = rng_int(&t->rng, 0, (int)s.d[axis] - 1), e = rng_int(&t->rng, (int)b + 1, (int)s.d[axis]);
    Shape ss = s;
    ss.d[axis] = e - b;
    int x = param(t, s, DOM_ANY);
    int sl = OPF(t, OP_SLICE, ss, x);
    O(t, sl)->axis = axis;
    O(t, sl)->begin = b;
    O(t, sl)->end = e;
    Shape ps = ss;
    int64_t extra = rng_int(&t->rng, 0, 3), at = rng_int(&t->rng, 0, (int)extra);
    ps.d[axis] += extra;
    int p = OPF(t, OP_PAD, ps, OPF(t, OP_EXP, ss, sl));
    O(t, p)->axis = axis;
    O(t, p)->begin = at;
    finish_loss(t, p);
    check_grads(t, "slice/pad");
    tg_free(t);
  }
}
END_TEST

START_TEST(test_concat) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(8000 + (uint64_t)trial);
    Shape s = rand_shape(&t->rng, 1, 3, 3);
    int axis = rng_int(&t->rng, 0, s.rank - 1), n = rng_int(&t->rng, 2, 3), in[3];
    Shape out = s;
    out.d[axis] = 0;
    for (int j = 0; j < n; j++) {
      Shape sj = s;
      sj.d[axis] = rng_int(&t->rng, 1, 3);
      out.d[axis] += sj.d[axis];
      in[j] = param(t, sj, DOM_ANY);
    }
    if (n == 3) { /* a value concatenated twice */
      out.d[axis] += O(t, in[0])->shape.d[axis] - O(t, in[2])->shape.d[axis];
      in[2] = in[0];
    }
    int y = mk(t, OP_CONCAT, DT_F32, out, n, in);
    O(t, y)->axis = axis;
    finish_loss(t, y);
    check_grads(t, "concat");
    tg_free(t);
  }
}
END_TEST

START_TEST(test_expand_sum_to) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(9000 + (uint64_t)trial);
    Shape big = rand_shape(&t->rng, 1, 4, 3), small = bcast_operand(&t->rng, big);
    int x = param(t, small, DOM_ANY);
    int e = OPF(t, OP_EXPAND, big, x);
    int x2 = param(t, big, DOM_ANY);
    int st = OPF(t, OP_SUM_TO, small, OPF(t, OP_MUL, big, e, x2));
    finish_loss(t, st);
    check_grads(t, "expand/sum_to");
    tg_free(t);
  }
}
END_TEST

/* ---- matmul ----------------------------------------------------------------------------------- */

static int matmul(Tg *t, int a, int b, bool ta, bool tb) {
  const Shape *x = &O(t, a)->shape, *y = &O(t, b)->shape;
  Shape xb = *x, yb = *y, s;
  xb.rank -= 2;
  yb.rank -= 2;
  ck_assert(shape_broadcast(&xb, &yb, &s));
  s.d[s.rank++] = ta ? x->d[x->rank - 1] : x->d[x->rank - 2];
  s.d[s.rank++] = tb ? y->d[y->rank - 2] : y->d[y->rank - 1];
  int id = OPF(t, OP_MATMUL, s, a, b);
  O(t, id)->ta = ta;
  O(t, id)->tb = tb;
  return id;
}

/* [batch..., r, c], transposed when tr. */
static Shape mat_shape(Shape batch, int64_t r, int64_t c, bool tr) {
  batch.d[batch.rank++] = tr ? c : r;
  batch.d[batch.rank++] = tr ? r : c;
  return batch;
}

START_TEST(test_matmul) {
  bool ta = _i & 1, tb = _i >> 1 & 1;
  for (int trial = 0; trial < 2 * TRIALS; trial++) {
    Tg *t = tg_new(10000 + 100 * (uint64_t)_i + (uint64_t)trial);
    Shape batch = rand_shape(&t->rng, 0, 2, 3);
    Shape ba = bcast_operand(&t->rng, batch), bb = bcast_operand(&t->rng, batch);
    if (trial % 4 == 0) ba.rank = 0; /* a rank-2 operand against a batched one */
    if (trial % 4 == 1) bb.rank = 0;
    int64_t m = rng_int(&t->rng, 1, 4), k = rng_int(&t->rng, 1, 4), n = rng_int(&t->rng, 1, 4);
    int a = param(t, mat_shape(ba, m, k, ta), DOM_ANY), b = param(t, mat_shape(bb, k, n, tb), DOM_ANY);
    finish_loss(t, matmul(t, a, b, ta, tb));
    check_grads(t, "matmul");
    tg_free(t);
  }
}
END_TEST

/* Rank-1 operands, NumPy style: [k] @ [b, k, n], [b, m, k] @ [k], [k] @ [k]. */
START_TEST(test_matmul_rank1) {
  for (int v = 0; v < 3; v++) {
    Tg *t = tg_new(10500 + (uint64_t)v);
    int a = param(t, v == 1 ? SH(2, 3, 4) : SH(4), DOM_ANY), b = param(t, v == 0 ? SH(2, 4, 3) : SH(4), DOM_ANY);
    Shape out = v == 0 ? SH(2, 3) : v == 1 ? SH(2, 3) : SCALAR;
    finish_loss(t, OPF(t, OP_MATMUL, out, a, b));
    check_grads(t, "matmul rank-1");
    tg_free(t);
  }
}
END_TEST

/* ---- neural ----------------------------------------------------------------------------------- */

START_TEST(test_embedding) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(11000 + (uint64_t)trial);
    Shape is = rand_shape(&t->rng, 1, 2, 4);
    int64_t rows = rng_int(&t->rng, 1, 4), cols = rng_int(&t->rng, 1, 3);
    int idx = int_input(t, is, (int)rows), w = param(t, SH(rows, cols), DOM_ANY);
    Shape os = is;
    os.d[os.rank++] = cols;
    finish_loss(t, OPF(t, OP_EMBEDDING, os, idx, w));
    check_grads(t, "embedding");
    tg_free(t);
  }
}
END_TEST

START_TEST(test_embedding_grad) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(11500 + (uint64_t)trial);
    Shape is = rand_shape(&t->rng, 1, 2, 4);
    int64_t rows = rng_int(&t->rng, 1, 4), cols = rng_int(&t->rng, 1, 3);
    Shape ds = is;
    ds.d[ds.rank++] = cols;
    int idx = int_input(t, is, (int)rows), dy = param(t, ds, DOM_ANY);
    finish_loss(t, OPF(t, OP_EMBEDDING_GRAD, SH(rows, cols), idx, dy));
    check_grads(t, "embedding_grad");
    tg_free(t);
  }
}
END_TEST

START_TEST(test_cross_entropy) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(12000 + (uint64_t)trial);
    Shape ts = rand_shape(&t->rng, 1, 2, 4);
    int64_t c = rng_int(&t->rng, 2, 5);
    Shape ls = ts;
    ls.d[ls.rank++] = c;
    int logits = param(t, ls, DOM_ANY), tg = int_input(t, ts, (int)c);
    finish_loss(t, OPF(t, OP_CROSS_ENTROPY, SCALAR, logits, tg));
    check_grads(t, "cross_entropy");
    tg_free(t);
  }
}
END_TEST

START_TEST(test_dropout) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(13000 + (uint64_t)trial);
    Shape s = rand_shape(&t->rng, 1, 3, 5);
    int x = param(t, s, DOM_ANY);
    int y = OPF(t, OP_DROPOUT, s, x);
    O(t, y)->value = 0.3;
    O(t, y)->key = 5 + trial;
    t->ctx = (RefCtx){1234, trial, trial % 3};
    finish_loss(t, y);
    check_grads(t, "dropout");
    tg_free(t);
  }
}
END_TEST

/* ---- compositions ------------------------------------------------------------------------------ */

/* x[B, T, 3] -> relu(x @ W1 + b1) @ W2 + b2 -> cross_entropy, with microbatches = dp = 2:
 * the seed 1/4 makes the gradients those of loss/4; W's gradients are single products. */
START_TEST(test_mlp) {
  Tg *t = tg_new(14000);
  Graph *g = t->g;
  g->train.microbatches = 2;
  g->mesh.dp = 2;
  int x = leaf(t, OP_INPUT, DT_F32, SH(2, 3, 3), DOM_ANY), tgt = int_input(t, SH(2, 3), 4);
  int w1 = param(t, SH(3, 5), DOM_ANY), b1 = param(t, SH(5), DOM_ANY);
  int w2 = param(t, SH(5, 4), DOM_ANY), b2 = param(t, SH(4), DOM_ANY);
  int h = OPF(t, OP_RELU, SH(2, 3, 5), OPF(t, OP_ADD, SH(2, 3, 5), matmul(t, x, w1, false, false), b1));
  int logits = OPF(t, OP_ADD, SH(2, 3, 4), matmul(t, h, w2, false, false), b2);
  int l = OPF(t, OP_CROSS_ENTROPY, SCALAR, logits, tgt);
  int quarter = OPF(t, OP_FULL, SCALAR);
  O(t, quarter)->value = 0.25;
  int scaled = OPF(t, OP_MUL, SCALAR, l, quarter); /* after the loss: not differentiated */
  g->loss = l;
  int nf = g->nops;
  Diag d = {.arena = &t->arena, .out = stderr, .max_errors = 50};
  ck_assert_int_eq(ad_backward(g, &d), 0);
  double **v = calloc((size_t)g->nops, sizeof *v);
  for (int i = 0; i < nf; i++) v[i] = t->data[i];
  ref_eval(g, v, &t->ctx);
  g->loss = scaled; /* finite differences of loss/4 */
  int params[] = {w1, b1, w2, b2};
  for (int k = 0; k < 4; k++) {
    int n;
    double *an = param_grad(t, v, params[k], &n);
    ck_assert_int_eq(n, 1);
    for (int64_t e = 0; e < shape_numel(&O(t, params[k])->shape); e++)
      compare("mlp", params[k], e, an[e], numeric_grad(t, nf, params[k], e));
    free(an);
  }
  /* a rank-2 weight's gradient against a batched input is one rank-2 product */
  for (int i = nf; i < g->nops; i++)
    if (O(t, i)->kind == OP_MATMUL && O(t, i)->phase == PH_BWD_W) ck_assert_int_eq(O(t, i)->shape.rank, 2);
  ref_free(g, v);
  free(v);
  tg_free(t);
}
END_TEST

/* A param used twice (tied embedding and unembedding): two sinks, use 0 and 1. */
START_TEST(test_tied) {
  for (int variant = 0; variant < 2; variant++) {
    Tg *t = tg_new(15000 + (uint64_t)variant);
    int idx = int_input(t, SH(2, 3), 4), tgt = int_input(t, SH(2, 3), 4);
    int w = param(t, SH(4, 3), DOM_ANY);
    int emb = OPF(t, OP_EMBEDDING, SH(2, 3, 3), idx, w);
    int h = OPF(t, OP_TANH, SH(2, 3, 3), emb);
    int logits;
    if (variant == 0) {
      int wt = OPF(t, OP_TRANSPOSE, SH(3, 4), w);
      O(t, wt)->axis = 0;
      O(t, wt)->axis2 = 1;
      logits = matmul(t, h, wt, false, false);
    } else {
      logits = matmul(t, h, w, false, true);
    }
    t->g->loss = OPF(t, OP_CROSS_ENTROPY, SCALAR, logits, tgt);
    int nfwd = t->g->nops;
    check_grads(t, "tied");
    int sinks = 0;
    for (int i = nfwd; i < t->g->nops; i++)
      if (O(t, i)->kind == OP_PARAM_GRAD) {
        ck_assert_int_eq(O(t, i)->key, w);
        ck_assert_int_eq(O(t, i)->fwd_of, O(t, i)->use == 0 ? emb : variant == 0 ? logits - 1 : logits);
        sinks++;
      }
    ck_assert_int_eq(sinks, 2);
    tg_free(t);
  }
}
END_TEST

/* q k v projections, causal scores, masked softmax, weighted sum. */
START_TEST(test_attention) {
  Tg *t = tg_new(16000);
  int64_t T = 4, D = 3;
  int x = leaf(t, OP_INPUT, DT_F32, SH(2, T, D), DOM_ANY);
  int wq = param(t, SH(D, D), DOM_ANY), wk = param(t, SH(D, D), DOM_ANY), wv = param(t, SH(D, D), DOM_ANY);
  int q = matmul(t, x, wq, false, false), k = matmul(t, x, wk, false, false), v = matmul(t, x, wv, false, false);
  int sc = matmul(t, q, k, false, true);
  int scale = OPF(t, OP_FULL, SCALAR);
  O(t, scale)->value = 1.0 / sqrt((double)D);
  int ss = OPF(t, OP_MUL, SH(2, T, T), sc, scale);
  int mask = mk(t, OP_CAUSAL_MASK, DT_BOOL, SH(T, T), 0, NULL);
  int ninf = OPF(t, OP_FULL, SCALAR);
  O(t, ninf)->value = -1e4;
  int masked = OPF(t, OP_WHERE, SH(2, T, T), mask, ss, ninf);
  int p = OPF(t, OP_SOFTMAX, SH(2, T, T), masked);
  O(t, p)->axis = -1;
  int o = matmul(t, p, v, false, false);
  finish_loss(t, o);
  bool wrt[64] = {0};
  wrt[x] = wrt[wq] = wrt[wk] = wrt[wv] = true;
  check_grads_wrt(t, "attention", wrt);
  tg_free(t);
}
END_TEST

/* y = x @ W: dW (and its sink) is BWD_W, dx is BWD_B; attributes copied from the forward op. */
START_TEST(test_phases) {
  Tg *t = tg_new(17000);
  int xin = leaf(t, OP_INPUT, DT_F32, SH(3, 4), DOM_ANY), p = param(t, SH(3, 4), DOM_ANY);
  int x = OPF(t, OP_MUL, SH(3, 4), xin, p);
  int w = param(t, SH(4, 5), DOM_ANY);
  int y = matmul(t, x, w, false, false);
  O(t, x)->stage = 0;
  O(t, y)->stage = 1;
  O(t, y)->recompute = true;
  int l = finish_loss(t, y);
  O(t, l)->stage = O(t, l - 1)->stage = 1;
  int nfwd = t->g->nops;
  check_grads(t, "phases");
  int found_dw = 0, found_dx = 0;
  for (int i = nfwd; i < t->g->nops; i++) {
    const Op *op = O(t, i);
    ck_assert_int_ge(op->fwd_of, 0);
    ck_assert_int_eq(op->stage, O(t, op->fwd_of)->stage);
    ck_assert_int_eq(op->recompute, O(t, op->fwd_of)->recompute);
    ck_assert_int_eq(op->layout.split_dim, -1);
    ck_assert(op->phase == PH_BWD_B || op->phase == PH_BWD_W);
    if (op->kind == OP_PARAM_GRAD) ck_assert_int_eq(op->phase, PH_BWD_W);
    if (op->kind == OP_MATMUL && op->fwd_of == y && op->shape.d[0] == 4) {
      ck_assert_int_eq(op->phase, PH_BWD_W);
      found_dw++;
    }
    if (op->kind == OP_MATMUL && op->fwd_of == y && op->shape.d[0] == 3) {
      ck_assert_int_eq(op->phase, PH_BWD_B);
      found_dx++;
    }
    if (op->kind == OP_FULL && op->fwd_of == l) ck_assert_int_eq(op->phase, PH_BWD_B); /* the seed */
    if (op->kind == OP_MUL && op->fwd_of == x) ck_assert_int_eq(op->phase, PH_BWD_W); /* dp = dx * xin */
  }
  ck_assert_int_eq(found_dw, 1);
  ck_assert_int_eq(found_dx, 1);
  tg_free(t);
}
END_TEST

/* Contributions to a value are summed left to right in consumer id order. */
START_TEST(test_sum_order) {
  Tg *t = tg_new(18000);
  int p = param(t, SH(2, 2), DOM_ANY);
  int x = OPF(t, OP_TANH, SH(2, 2), p);
  int c1 = OPF(t, OP_EXP, SH(2, 2), x), c2 = OPF(t, OP_NEG, SH(2, 2), x), c3 = OPF(t, OP_SIGMOID, SH(2, 2), x);
  int s = OPF(t, OP_ADD, SH(2, 2), OPF(t, OP_ADD, SH(2, 2), c3, c2), c1);
  finish_loss(t, s);
  int nfwd = t->g->nops, grad_of[64];
  Diag d = {.arena = &t->arena, .out = stderr, .max_errors = 50};
  ck_assert_int_eq(ad_backward_ex(t->g, &d, NULL, grad_of), 0);
  (void)nfwd;
  const Op *top = O(t, grad_of[x]);
  ck_assert_int_eq(top->kind, OP_ADD);
  ck_assert_int_eq(top->fwd_of, x);
  const Op *left = O(t, top->in[0]);
  ck_assert_int_eq(left->kind, OP_ADD);
  ck_assert_int_eq(O(t, left->in[0])->fwd_of, c1);
  ck_assert_int_eq(O(t, left->in[1])->fwd_of, c2);
  ck_assert_int_eq(O(t, top->in[1])->fwd_of, c3);
  tg_free(t);
}
END_TEST

/* The seed is 1 / (microbatches * dp); an unused param gets no sink; only the loss's cone. */
START_TEST(test_seed_and_cone) {
  Tg *t = tg_new(19000);
  t->g->train.microbatches = 4;
  t->g->mesh.dp = 2;
  int p = param(t, SH(3), DOM_ANY), unused = param(t, SH(2), DOM_ANY);
  OPF(t, OP_EXP, SH(2), unused);
  int l = OPF(t, OP_SUM, SCALAR, p);
  O(t, l)->axis = AXIS_ALL;
  t->g->loss = l;
  int nfwd = t->g->nops;
  Diag d = {.arena = &t->arena, .out = stderr, .max_errors = 50};
  ck_assert_int_eq(ad_backward(t->g, &d), 0);
  for (int i = nfwd; i < t->g->nops; i++) {
    ck_assert_int_ne(O(t, i)->fwd_of, unused + 1);
    if (O(t, i)->kind == OP_PARAM_GRAD) ck_assert_int_eq(O(t, i)->key, p);
  }
  double **v = calloc((size_t)t->g->nops, sizeof *v);
  v[p] = t->data[p];
  v[unused] = t->data[unused];
  ref_eval(t->g, v, NULL);
  int n;
  double *gr = param_grad(t, v, p, &n);
  for (int i = 0; i < 3; i++) ck_assert_double_eq_tol(gr[i], 0.125, 1e-15);
  free(gr);
  ref_free(t->g, v);
  free(v);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ad_dump(f, t->g);
  fclose(f);
  ck_assert_ptr_nonnull(strstr(buf, "param_grad"));
  ck_assert_ptr_nonnull(strstr(buf, "bwd_w"));
  free(buf);
  tg_free(t);
}
END_TEST

/* A float INPUT differentiated on request (wrt), through grad_of. */
START_TEST(test_wrt_input) {
  Tg *t = tg_new(20000);
  int x = leaf(t, OP_INPUT, DT_F32, SH(2, 3), DOM_ANY), w = param(t, SH(3, 2), DOM_ANY);
  int y = OPF(t, OP_GELU, SH(2, 2), matmul(t, x, w, false, false));
  finish_loss(t, y);
  bool wrt[64] = {0};
  wrt[x] = wrt[w] = true;
  check_grads_wrt(t, "wrt input", wrt);
  tg_free(t);
}
END_TEST

/* A loss that is not a float scalar, or none, is a user error, not a crash. */
START_TEST(test_bad_loss) {
  Tg *t = tg_new(21000);
  int p = param(t, SH(3), DOM_ANY);
  int y = OPF(t, OP_EXP, SH(3), p);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  Diag d = {.arena = &t->arena, .out = f, .max_errors = 50};
  ck_assert_int_eq(ad_backward(t->g, &d), 1); /* no loss */
  t->g->loss = y;
  ck_assert_int_eq(ad_backward(t->g, &d), 1); /* not a scalar */
  ck_assert_int_eq(t->g->nops, 2);            /* nothing appended */
  fclose(f);
  free(buf);
  tg_free(t);
}
END_TEST

static Suite *autodiff_suite(void) {
  Suite *s = suite_create("autodiff");
  TCase *tc = tcase_create("rules");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_unary, 0, (int)(sizeof unary_cases / sizeof unary_cases[0]));
  tcase_add_test(tc, test_unary_broadcast);
  tcase_add_loop_test(tc, test_binary, 0, (int)(sizeof binary_cases / sizeof binary_cases[0]));
  tcase_add_test(tc, test_same_input_twice);
  tcase_add_test(tc, test_where);
  tcase_add_loop_test(tc, test_reduce, 0, 3);
  tcase_add_test(tc, test_amax_ties);
  tcase_add_loop_test(tc, test_softmax, 0, 2);
  tcase_add_test(tc, test_reshape_transpose);
  tcase_add_test(tc, test_slice_pad);
  tcase_add_test(tc, test_concat);
  tcase_add_test(tc, test_expand_sum_to);
  tcase_add_loop_test(tc, test_matmul, 0, 4);
  tcase_add_test(tc, test_matmul_rank1);
  tcase_add_test(tc, test_embedding);
  tcase_add_test(tc, test_embedding_grad);
  tcase_add_test(tc, test_cross_entropy);
  tcase_add_test(tc, test_dropout);
  suite_add_tcase(s, tc);
  TCase *tm = tcase_create("models");
  tcase_set_timeout(tm, 60);
  tcase_add_test(tm, test_mlp);
  tcase_add_test(tm, test_tied);
  tcase_add_test(tm, test_attention);
  tcase_add_test(tm, test_phases);
  tcase_add_test(tm, test_sum_order);
  tcase_add_test(tm, test_seed_and_cone);
  tcase_add_test(tm, test_wrt_input);
  tcase_add_test(tm, test_bad_loss);
  suite_add_tcase(s, tm);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(autodiff_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
