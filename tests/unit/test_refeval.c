/*
 * test_refeval.c — the reference evaluator on small hand-computed cases, one or more
 * per op kind: elementwise with broadcasting, reductions, softmax, shape ops and their
 * round trips, matmul with batch broadcasting and ta/tb, embedding (and its grad with
 * repeated indices), cross entropy, dropout statistics, creation ops; the v2 ops with
 * kernels of their own (sin, cos, floor, silu, remainder, argmax, topk, cumsum, gather,
 * one_hot, im2col and their gradients, the run-time check).
 */
#include "compiler/autodiff.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAXOPS = 256 };

typedef struct Tg {
  Arena arena;
  Graph *g;
  double *data[MAXOPS];
  double **v;
} Tg;

static Tg *tg_new(void) {
  Tg *t = calloc(1, sizeof *t);
  arena_init(&t->arena);
  t->g = graph_new(&t->arena);
  return t;
}

static void tg_free(Tg *t) {
  if (t->v) {
    ref_free(t->g, t->v);
    free(t->v);
  }
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
#define NARGS(...) ((int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)))
#define DATA(...) (const double[]){__VA_ARGS__}

static Op *O(Tg *t, int id) { return t->g->ops[id]; }

static int mk(Tg *t, OpKind k, DType dt, Shape s, int nin, const int *in) {
  Op *op = graph_add(t->g, k, nin, in, (Loc){0});
  op->shape = s;
  op->dtype = dt;
  return op->id;
}
#define OPF(t, k, s, ...) mk(t, k, DT_F32, s, NARGS(__VA_ARGS__), (int[]){__VA_ARGS__})
#define OP0(t, k, dt, s) mk(t, k, dt, s, 0, NULL)

/* An INPUT holding a copy of data. */
static int input(Tg *t, DType dt, Shape s, const double *data) {
  int id = OP0(t, OP_INPUT, dt, s);
  int64_t n = shape_numel(&s);
  t->data[id] = malloc(sizeof(double) * (size_t)(n ? n : 1));
  memcpy(t->data[id], data, sizeof(double) * (size_t)n);
  return id;
}

static void run_ctx(Tg *t, const RefCtx *ctx) {
  if (!t->v) t->v = calloc(MAXOPS, sizeof(double *));
  for (int i = 0; i < t->g->nops; i++)
    if (t->data[i]) t->v[i] = t->data[i];
  ref_eval(t->g, t->v, ctx);
}
static void run(Tg *t) { run_ctx(t, NULL); }

static void expect(Tg *t, int id, const double *want, int64_t n) {
  ck_assert_int_eq(shape_numel(&O(t, id)->shape), n);
  for (int64_t i = 0; i < n; i++)
    ck_assert_msg(fabs(t->v[id][i] - want[i]) <= 1e-12 * fmax(1.0, fabs(want[i])),
                  "%%%d %s element %lld: got %.15g, want %.15g", id, op_name(O(t, id)->kind), (long long)i,
                  t->v[id][i], want[i]);
}
#define EXPECT(t, id, ...) expect(t, id, DATA(__VA_ARGS__), (int64_t)(sizeof(DATA(__VA_ARGS__)) / sizeof(double)))

/* ---- elementwise ---------------------------------------------------------------- */

START_TEST(test_unary) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(4), DATA(-2, -0.5, 0, 1.5));
  int p = input(t, DT_F32, SH(3), DATA(0.25, 1, 4));
  int neg = OPF(t, OP_NEG, SH(4), x), relu = OPF(t, OP_RELU, SH(4), x), ab = OPF(t, OP_ABS, SH(4), x);
  int sg = OPF(t, OP_SIGN, SH(4), x), ex = OPF(t, OP_EXP, SH(4), x), th = OPF(t, OP_TANH, SH(4), x);
  int sig = OPF(t, OP_SIGMOID, SH(4), x), ge = OPF(t, OP_GELU, SH(4), x);
  int lg = OPF(t, OP_LOG, SH(3), p), sq = OPF(t, OP_SQRT, SH(3), p), rs = OPF(t, OP_RSQRT, SH(3), p);
  int pw = OPF(t, OP_POW, SH(3), p);
  O(t, pw)->value = 1.5;
  int nt = mk(t, OP_NOT, DT_BOOL, SH(4), 1, &x);
  run(t);
  EXPECT(t, neg, 2, 0.5, 0, -1.5);
  EXPECT(t, relu, 0, 0, 0, 1.5);
  EXPECT(t, ab, 2, 0.5, 0, 1.5);
  EXPECT(t, sg, -1, -1, 0, 1);
  EXPECT(t, ex, exp(-2), exp(-0.5), 1, exp(1.5));
  EXPECT(t, th, tanh(-2), tanh(-0.5), 0, tanh(1.5));
  EXPECT(t, sig, 1 / (1 + exp(2)), 1 / (1 + exp(0.5)), 0.5, 1 / (1 + exp(-1.5)));
  /* gelu (tanh form) at 1.5: 0.5*1.5*(1+tanh(0.79788456*(1.5+0.044715*3.375))) */
  ck_assert_double_eq_tol(t->v[ge][3], 1.3995715, 1e-6);
  ck_assert_double_eq_tol(t->v[ge][0], -0.04540230, 1e-7);
  ck_assert_double_eq(t->v[ge][2], 0.0);
  EXPECT(t, lg, log(0.25), 0, log(4));
  EXPECT(t, sq, 0.5, 1, 2);
  EXPECT(t, rs, 2, 1, 0.5);
  EXPECT(t, pw, 0.125, 1, 8);
  EXPECT(t, nt, 0, 0, 1, 0);
  tg_free(t);
  /* x^0.5 at -inf is NaN, as sqrt and PyTorch give it (C's pow gives +inf: pass 67) */
  t = tg_new();
  int m = input(t, DT_F32, SH(2), DATA(-INFINITY, 9));
  int h = OPF(t, OP_POW, SH(2), m);
  O(t, h)->value = 0.5;
  run(t);
  ck_assert_msg(isnan(t->v[h][0]), "(-inf)^0.5: %g, want NaN", t->v[h][0]);
  ck_assert_double_eq(t->v[h][1], 3.0);
  tg_free(t);
}
END_TEST

START_TEST(test_binary_broadcast) {
  Tg *t = tg_new();
  int a = input(t, DT_F32, SH(2, 3), DATA(1, 2, 3, 4, 5, 6));
  int b = input(t, DT_F32, SH(3), DATA(10, 20, 30));
  int c = input(t, DT_F32, SH(2, 1), DATA(100, 200));
  int s = input(t, DT_F32, SCALAR, DATA(2));
  int add = OPF(t, OP_ADD, SH(2, 3), a, b), sub = OPF(t, OP_SUB, SH(2, 3), a, c);
  int mul = OPF(t, OP_MUL, SH(2, 3), a, s), div = OPF(t, OP_DIV, SH(2, 3), b, a);
  int outer = OPF(t, OP_MUL, SH(2, 3), c, b); /* [2,1] x [3] -> [2,3] */
  int mx = OPF(t, OP_MAXIMUM, SH(2, 3), a, OPF(t, OP_FULL, SCALAR));
  int mn = OPF(t, OP_MINIMUM, SH(2, 3), a, O(t, mx)->in[1]);
  O(t, O(t, mx)->in[1])->value = 3.5;
  run(t);
  EXPECT(t, add, 11, 22, 33, 14, 25, 36);
  EXPECT(t, sub, -99, -98, -97, -196, -195, -194);
  EXPECT(t, mul, 2, 4, 6, 8, 10, 12);
  EXPECT(t, div, 10, 10, 10, 2.5, 4, 5);
  EXPECT(t, outer, 1000, 2000, 3000, 2000, 4000, 6000);
  EXPECT(t, mx, 3.5, 3.5, 3.5, 4, 5, 6);
  EXPECT(t, mn, 1, 2, 3, 3.5, 3.5, 3.5);
  tg_free(t);
}
END_TEST

START_TEST(test_compare_where_cast) {
  Tg *t = tg_new();
  int a = input(t, DT_F32, SH(4), DATA(1, 2, 3, 4));
  int b = input(t, DT_F32, SH(4), DATA(2, 2, 2, 2));
  int kinds[] = {OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE}, ids[6];
  for (int i = 0; i < 6; i++) ids[i] = mk(t, kinds[i], DT_BOOL, SH(4), 2, (int[]){a, b});
  int p = input(t, DT_BOOL, SH(4), DATA(1, 1, 0, 0)), q = input(t, DT_BOOL, SH(4), DATA(1, 0, 1, 0));
  int an = mk(t, OP_AND, DT_BOOL, SH(4), 2, (int[]){p, q}), orr = mk(t, OP_OR, DT_BOOL, SH(4), 2, (int[]){p, q});
  int m = input(t, DT_BOOL, SH(2, 1), DATA(1, 0));
  int w = OPF(t, OP_WHERE, SH(2, 4), m, a, b);
  int f = input(t, DT_F32, SH(5), DATA(1.7, -1.7, 0, 2.5, -0.2));
  int ci = mk(t, OP_CAST, DT_I32, SH(5), 1, &f), cb = mk(t, OP_CAST, DT_BOOL, SH(5), 1, &f);
  int rg = OPF(t, OP_RELU_GRAD, SH(4), OPF(t, OP_SUB, SH(4), a, b), b);
  run(t);
  EXPECT(t, ids[0], 0, 1, 0, 0);
  EXPECT(t, ids[1], 1, 0, 1, 1);
  EXPECT(t, ids[2], 1, 0, 0, 0);
  EXPECT(t, ids[3], 1, 1, 0, 0);
  EXPECT(t, ids[4], 0, 0, 1, 1);
  EXPECT(t, ids[5], 0, 1, 1, 1);
  EXPECT(t, an, 1, 0, 0, 0);
  EXPECT(t, orr, 1, 1, 1, 0);
  EXPECT(t, w, 1, 2, 3, 4, 2, 2, 2, 2);
  EXPECT(t, ci, 1, -1, 0, 2, 0);
  EXPECT(t, cb, 1, 1, 0, 1, 1);
  EXPECT(t, rg, 0, 0, 2, 2);
  tg_free(t);
}
END_TEST

/* gelu_grad(x, dy) against a central difference of gelu. */
START_TEST(test_gelu_grad) {
  Tg *t = tg_new();
  const double xs[] = {-3, -1, -0.3, 0, 0.7, 2}, h = 1e-5;
  double xp[6], xm[6];
  for (int i = 0; i < 6; i++) xp[i] = xs[i] + h, xm[i] = xs[i] - h;
  int x = input(t, DT_F32, SH(6), xs), dy = input(t, DT_F32, SCALAR, DATA(3));
  int gg = OPF(t, OP_GELU_GRAD, SH(6), x, dy);
  int gp = OPF(t, OP_GELU, SH(6), input(t, DT_F32, SH(6), xp)), gm = OPF(t, OP_GELU, SH(6), input(t, DT_F32, SH(6), xm));
  run(t);
  for (int i = 0; i < 6; i++) ck_assert_double_eq_tol(t->v[gg][i], 3 * (t->v[gp][i] - t->v[gm][i]) / (2 * h), 1e-8);
  tg_free(t);
}
END_TEST

/* ---- reductions and softmax ---------------------------------------------------------- */

START_TEST(test_reduce) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(2, 3), DATA(1, 5, 3, -4, 2, 0));
  int s0 = OPF(t, OP_SUM, SH(3), x), s1 = OPF(t, OP_SUM, SH(2, 1), x), sa = OPF(t, OP_SUM, SCALAR, x);
  int m1 = OPF(t, OP_MEAN, SH(2), x), mx0 = OPF(t, OP_AMAX, SH(1, 3), x), mxa = OPF(t, OP_AMAX, SCALAR, x);
  int mneg = OPF(t, OP_MEAN, SH(2), x);
  O(t, s0)->axis = 0;
  O(t, s1)->axis = 1;
  O(t, s1)->keepdims = true;
  O(t, sa)->axis = AXIS_ALL;
  O(t, m1)->axis = 1;
  O(t, mx0)->axis = 0;
  O(t, mx0)->keepdims = true;
  O(t, mxa)->axis = AXIS_ALL;
  O(t, mneg)->axis = -1;
  run(t);
  EXPECT(t, s0, -3, 7, 3);
  EXPECT(t, s1, 9, -2);
  EXPECT(t, sa, 7);
  EXPECT(t, m1, 3, -2.0 / 3);
  EXPECT(t, mx0, 1, 5, 3);
  EXPECT(t, mxa, 5);
  EXPECT(t, mneg, 3, -2.0 / 3);
  tg_free(t);
}
END_TEST

START_TEST(test_softmax) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(2, 3), DATA(1, 2, 3, 1000, 1000, 1000));
  int sm = OPF(t, OP_SOFTMAX, SH(2, 3), x), ls = OPF(t, OP_LOG_SOFTMAX, SH(2, 3), x);
  int sm0 = OPF(t, OP_SOFTMAX, SH(2, 3), x);
  O(t, sm)->axis = -1;
  O(t, ls)->axis = 1;
  O(t, sm0)->axis = 0;
  run(t);
  double z = exp(1) + exp(2) + exp(3);
  EXPECT(t, sm, exp(1) / z, exp(2) / z, exp(3) / z, 1.0 / 3, 1.0 / 3, 1.0 / 3);
  EXPECT(t, ls, 1 - log(z), 2 - log(z), 3 - log(z), -log(3), -log(3), -log(3));
  for (int r = 0; r < 2; r++) ck_assert_double_eq_tol(t->v[sm][3 * r] + t->v[sm][3 * r + 1] + t->v[sm][3 * r + 2], 1, 1e-15);
  for (int c = 0; c < 3; c++) ck_assert_double_eq_tol(t->v[sm0][c] + t->v[sm0][3 + c], 1, 1e-15);
  ck_assert_double_eq(t->v[sm0][0], 0.0); /* exp(1 - 1000) underflows */
  tg_free(t);
}
END_TEST

/* ---- shape ops ------------------------------------------------------------------------- */

START_TEST(test_transpose_reshape) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(2, 3), DATA(1, 2, 3, 4, 5, 6));
  int tr = OPF(t, OP_TRANSPOSE, SH(3, 2), x);
  O(t, tr)->axis = 0;
  O(t, tr)->axis2 = 1;
  int rs = OPF(t, OP_RESHAPE, SH(3, 2), x);
  int y = input(t, DT_F32, SH(2, 2, 2), DATA(0, 1, 2, 3, 4, 5, 6, 7));
  int t02 = OPF(t, OP_TRANSPOSE, SH(2, 2, 2), y);
  O(t, t02)->axis = 0;
  O(t, t02)->axis2 = 2;
  run(t);
  EXPECT(t, tr, 1, 4, 2, 5, 3, 6);
  EXPECT(t, rs, 1, 2, 3, 4, 5, 6);
  EXPECT(t, t02, 0, 4, 2, 6, 1, 5, 3, 7);
  tg_free(t);
}
END_TEST

/* slice then pad back; concat then slice back; expand then sum_to. */
START_TEST(test_round_trips) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(2, 4), DATA(1, 2, 3, 4, 5, 6, 7, 8));
  int sl = OPF(t, OP_SLICE, SH(2, 2), x);
  O(t, sl)->axis = 1, O(t, sl)->begin = 1, O(t, sl)->end = 3;
  int pd = OPF(t, OP_PAD, SH(2, 4), sl);
  O(t, pd)->axis = 1, O(t, pd)->begin = 1;
  int y = input(t, DT_F32, SH(1, 4), DATA(9, 10, 11, 12));
  int cc = OPF(t, OP_CONCAT, SH(4, 4), x, y, y);
  O(t, cc)->axis = 0;
  int back = OPF(t, OP_SLICE, SH(1, 4), cc);
  O(t, back)->axis = 0, O(t, back)->begin = 2, O(t, back)->end = 3;
  int cc1 = OPF(t, OP_CONCAT, SH(2, 5), x, OPF(t, OP_RESHAPE, SH(2, 1), OPF(t, OP_SLICE, SH(1, 2), y)));
  O(t, cc1)->axis = -1;
  O(t, O(t, O(t, cc1)->in[1])->in[0])->axis = 1, O(t, O(t, O(t, cc1)->in[1])->in[0])->begin = 0,
                                         O(t, O(t, O(t, cc1)->in[1])->in[0])->end = 2;
  int b = input(t, DT_F32, SH(3, 1), DATA(1, 2, 3));
  int ex = OPF(t, OP_EXPAND, SH(2, 3, 2), b);
  int st = OPF(t, OP_SUM_TO, SH(3, 1), ex);
  int st2 = OPF(t, OP_SUM_TO, SH(2), ex);
  int st3 = OPF(t, OP_SUM_TO, SH(2, 1, 1), ex);
  run(t);
  EXPECT(t, sl, 2, 3, 6, 7);
  EXPECT(t, pd, 0, 2, 3, 0, 0, 6, 7, 0);
  EXPECT(t, cc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 9, 10, 11, 12);
  EXPECT(t, back, 9, 10, 11, 12);
  EXPECT(t, cc1, 1, 2, 3, 4, 9, 5, 6, 7, 8, 10);
  EXPECT(t, ex, 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3);
  EXPECT(t, st, 4, 8, 12);
  EXPECT(t, st2, 12, 12);
  EXPECT(t, st3, 12, 12);
  tg_free(t);
}
END_TEST

/* ---- matmul ----------------------------------------------------------------------------- */

START_TEST(test_matmul) {
  Tg *t = tg_new();
  int a = input(t, DT_F32, SH(2, 3), DATA(1, 2, 3, 4, 5, 6));
  int b = input(t, DT_F32, SH(3, 2), DATA(7, 8, 9, 10, 11, 12));
  int at = input(t, DT_F32, SH(3, 2), DATA(1, 4, 2, 5, 3, 6));      /* a transposed */
  int bt = input(t, DT_F32, SH(2, 3), DATA(7, 9, 11, 8, 10, 12));   /* b transposed */
  int ab = OPF(t, OP_MATMUL, SH(2, 2), a, b);
  int ab_ta = OPF(t, OP_MATMUL, SH(2, 2), at, b);
  int ab_tb = OPF(t, OP_MATMUL, SH(2, 2), a, bt);
  int ab_tt = OPF(t, OP_MATMUL, SH(2, 2), at, bt);
  O(t, ab_ta)->ta = true;
  O(t, ab_tb)->tb = true;
  O(t, ab_tt)->ta = O(t, ab_tt)->tb = true;
  /* batched [2,2,3] against a rank-2 [3,2]: each batch times b */
  int a3 = input(t, DT_F32, SH(2, 2, 3), DATA(1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0));
  int bb = OPF(t, OP_MATMUL, SH(2, 2, 2), a3, b);
  /* [2,1,1,2] @ [3,2,1] -> [2,3,1,1]: batch dims broadcast both ways */
  int p = input(t, DT_F32, SH(2, 1, 1, 2), DATA(1, 2, 3, 4));
  int q = input(t, DT_F32, SH(3, 2, 1), DATA(1, 0, 0, 1, 1, 1));
  int pq = OPF(t, OP_MATMUL, SH(2, 3, 1, 1), p, q);
  /* rank-2 a against batched b: [1,2] @ [2,2,1] */
  int r = input(t, DT_F32, SH(1, 2), DATA(2, 3));
  int rq = OPF(t, OP_MATMUL, SH(2, 1, 1), r, input(t, DT_F32, SH(2, 2, 1), DATA(1, 10, 100, 1000)));
  run(t);
  EXPECT(t, ab, 58, 64, 139, 154);
  EXPECT(t, ab_ta, 58, 64, 139, 154);
  EXPECT(t, ab_tb, 58, 64, 139, 154);
  EXPECT(t, ab_tt, 58, 64, 139, 154);
  EXPECT(t, bb, 58, 64, 139, 154, 7, 8, 9, 10);
  EXPECT(t, pq, 1, 2, 3, 3, 4, 7);
  EXPECT(t, rq, 32, 3200);
  tg_free(t);
}
END_TEST

/* ---- neural ---------------------------------------------------------------------------------- */

START_TEST(test_embedding) {
  Tg *t = tg_new();
  int idx = input(t, DT_I32, SH(2, 2), DATA(2, 0, 2, 2));
  int w = input(t, DT_F32, SH(3, 2), DATA(1, 2, 3, 4, 5, 6));
  int e = OPF(t, OP_EMBEDDING, SH(2, 2, 2), idx, w);
  int dy = input(t, DT_F32, SH(2, 2, 2), DATA(1, 10, 100, 1000, 0.5, 0.25, 2, 4));
  int eg = OPF(t, OP_EMBEDDING_GRAD, SH(3, 2), idx, dy);
  run(t);
  EXPECT(t, e, 5, 6, 1, 2, 5, 6, 5, 6);
  EXPECT(t, eg, 100, 1000, 0, 0, 3.5, 14.25); /* row 2 gets positions 0, 2, 3 */
  tg_free(t);
}
END_TEST

START_TEST(test_cross_entropy) {
  Tg *t = tg_new();
  int u = input(t, DT_F32, SH(2, 3, 5), DATA(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                                             7, 7, 7, 7, 7));
  int tu = input(t, DT_I32, SH(2, 3), DATA(0, 1, 2, 3, 4, 0));
  int ceu = OPF(t, OP_CROSS_ENTROPY, SCALAR, u, tu);
  int x = input(t, DT_F32, SH(2, 2), DATA(0, log(3), 1, 1));
  int tx = input(t, DT_I32, SH(2), DATA(1, 0));
  int ce = OPF(t, OP_CROSS_ENTROPY, SCALAR, x, tx);
  int g = input(t, DT_F32, SCALAR, DATA(2));
  int cg = OPF(t, OP_CE_GRAD, SH(2, 2), x, tx, g);
  run(t);
  EXPECT(t, ceu, log(5));
  /* row 0: -log(3/4); row 1: -log(1/2); mean */
  EXPECT(t, ce, (-log(0.75) + log(2)) / 2);
  /* (softmax - onehot) * 2 / 2 */
  EXPECT(t, cg, 0.25, 0.75 - 1, 0.5 - 1, 0.5);
  tg_free(t);
}
END_TEST

START_TEST(test_dropout) {
  Tg *t = tg_new();
  enum { N = 20000 };
  double *ones = malloc(sizeof(double) * N);
  for (int i = 0; i < N; i++) ones[i] = 1.0;
  int x = input(t, DT_F32, SH(N), ones);
  free(ones);
  int d1 = OPF(t, OP_DROPOUT, SH(N), x), d2 = OPF(t, OP_DROPOUT, SH(N), x), d3 = OPF(t, OP_DROPOUT, SH(N), x);
  int d0 = OPF(t, OP_DROPOUT, SH(N), x);
  O(t, d1)->value = O(t, d2)->value = O(t, d3)->value = 0.25;
  O(t, d1)->key = O(t, d2)->key = 3;
  O(t, d3)->key = 4;
  O(t, d0)->value = 0.0;
  RefCtx ctx = {7, 2, 1};
  run_ctx(t, &ctx);
  int kept = 0, same = 0, diff = 0;
  for (int i = 0; i < N; i++) {
    ck_assert(t->v[d1][i] == 0.0 || fabs(t->v[d1][i] - 1 / 0.75) < 1e-15);
    kept += t->v[d1][i] != 0.0;
    same += t->v[d1][i] == t->v[d2][i];
    diff += t->v[d1][i] != t->v[d3][i];
    ck_assert_double_eq(t->v[d0][i], 1.0);
  }
  ck_assert_msg(fabs(kept / (double)N - 0.75) < 0.02, "keep rate %g", kept / (double)N);
  ck_assert_int_eq(same, N);
  ck_assert_int_gt(diff, N / 10);
  /* another micro-batch: another mask */
  double *before = malloc(sizeof(double) * N);
  memcpy(before, t->v[d1], sizeof(double) * N);
  ctx.mb = 2;
  run_ctx(t, &ctx);
  int changed = 0;
  for (int i = 0; i < N; i++) changed += t->v[d1][i] != before[i];
  ck_assert_int_gt(changed, N / 10);
  free(before);
  /* evaluation (micro-batch -1, the validation pass): the identity, unscaled, as the kernels */
  ctx.mb = -1;
  run_ctx(t, &ctx);
  for (int i = 0; i < N; i++) ck_assert_msg(t->v[d1][i] == 1.0, "evaluation dropout: element %d is %g", i, t->v[d1][i]);
  tg_free(t);
}
END_TEST

/* A NaN in either operand of maximum and minimum, or anywhere in amax's row, gives NaN (as
 * torch.maximum, minimum and amax, and the kernels); relu_grad passes dy at a NaN input (as
 * PyTorch's threshold_backward: dy where !(x <= 0)). Pass 108: each passed every suite. */
START_TEST(test_nan_edges) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(3), DATA(NAN, 1, 2)), y = input(t, DT_F32, SH(3), DATA(1, NAN, 1));
  int mx = OPF(t, OP_MAXIMUM, SH(3), x, y), mn = OPF(t, OP_MINIMUM, SH(3), x, y);
  int r = input(t, DT_F32, SH(2, 3), DATA(1, 5, 3, NAN, 2, 0));
  int am = OPF(t, OP_AMAX, SH(2), r);
  O(t, am)->axis = 1;
  int a = input(t, DT_F32, SH(4), DATA(NAN, -1, 0, 2)), dy = input(t, DT_F32, SH(4), DATA(5, 5, 5, 5));
  int rg = OPF(t, OP_RELU_GRAD, SH(4), a, dy);
  run(t);
  for (int i = 0; i < 2; i++) {
    ck_assert_msg(isnan(t->v[mx][i]), "maximum, element %d: %g, not NaN", i, t->v[mx][i]);
    ck_assert_msg(isnan(t->v[mn][i]), "minimum, element %d: %g, not NaN", i, t->v[mn][i]);
  }
  ck_assert_double_eq(t->v[mx][2], 2);
  ck_assert_double_eq(t->v[mn][2], 1);
  ck_assert_double_eq(t->v[am][0], 5);
  ck_assert_msg(isnan(t->v[am][1]), "amax of a row holding a NaN: %g", t->v[am][1]);
  EXPECT(t, rg, 5, 0, 0, 5);
  tg_free(t);
}
END_TEST

START_TEST(test_creation_and_sinks) {
  Tg *t = tg_new();
  int f = OP0(t, OP_FULL, DT_F32, SH(2, 2));
  O(t, f)->value = 2.5;
  int ar = OP0(t, OP_ARANGE, DT_I32, SH(4));
  int cm = OP0(t, OP_CAUSAL_MASK, DT_BOOL, SH(3, 3));
  int pg = OPF(t, OP_PARAM_GRAD, SH(2, 2), f);
  int send = OPF(t, OP_SEND, SH(2, 2), f);
  int ar2 = OPF(t, OP_ALLREDUCE, SH(2, 2), f);
  int rv = OP0(t, OP_RECV, DT_F32, SH(2));
  t->data[rv] = malloc(2 * sizeof(double));
  t->data[rv][0] = 8, t->data[rv][1] = 9;
  int neg = OPF(t, OP_NEG, SH(2), rv);
  run(t);
  EXPECT(t, f, 2.5, 2.5, 2.5, 2.5);
  EXPECT(t, ar, 0, 1, 2, 3);
  EXPECT(t, cm, 1, 0, 0, 1, 1, 0, 1, 1, 1);
  EXPECT(t, pg, 2.5, 2.5, 2.5, 2.5);
  ck_assert_ptr_ne(t->v[pg], t->v[f]);
  ck_assert_ptr_null(t->v[send]);
  EXPECT(t, ar2, 2.5, 2.5, 2.5, 2.5);
  EXPECT(t, neg, -8, -9);
  ref_free(t->g, t->v);
  ck_assert_ptr_eq(t->v[rv], t->data[rv]); /* leaves stay the caller's */
  ck_assert_ptr_null(t->v[f]);
  tg_free(t);
}
END_TEST

/* ---- v2 ops with kernels of their own (issue 13) ------------------------------------------------ */

START_TEST(test_v2_elementwise) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(4), DATA(-2, -0.5, 0, 1.5));
  int sn = OPF(t, OP_SIN, SH(4), x), cs = OPF(t, OP_COS, SH(4), x), fl = OPF(t, OP_FLOOR, SH(4), x);
  int si = OPF(t, OP_SILU, SH(4), x);
  int a = input(t, DT_F32, SH(6), DATA(5.5, -5.5, 5.5, -5.5, 3, 0)), b = input(t, DT_F32, SH(6), DATA(2, 2, -2, -2, 1.5, 3));
  int rf = OPF(t, OP_REM, SH(6), a, b);
  int ai = input(t, DT_I32, SH(5), DATA(7, -7, 7, -7, 5)), bi = input(t, DT_I32, SH(5), DATA(3, 3, -3, -3, 0));
  int ri = mk(t, OP_REM, DT_I32, SH(5), 2, (int[]){ai, bi});
  run(t);
  EXPECT(t, sn, sin(-2), sin(-0.5), 0, sin(1.5));
  EXPECT(t, cs, cos(-2), cos(-0.5), 1, cos(1.5));
  EXPECT(t, fl, -2, -1, 0, 1);
  EXPECT(t, si, -2 / (1 + exp(2)), -0.5 / (1 + exp(0.5)), 0, 1.5 / (1 + exp(-1.5)));
  EXPECT(t, rf, 1.5, 0.5, -0.5, -1.5, 0, 0); /* torch.remainder: the sign of b */
  EXPECT(t, ri, 1, 2, -2, -1, 0);            /* and an i32 x % 0 is 0 */
  tg_free(t);
}
END_TEST

/* argmax and topk: ties to the lower index, NaN the largest; cumsum both ways. */
START_TEST(test_v2_order_ops) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(3, 4), DATA(1, 3, 3, 2, 0, -1, 0, 5, 1, NAN, 2, NAN));
  int am1 = mk(t, OP_ARGMAX, DT_I32, SH(3), 1, &x), am0 = mk(t, OP_ARGMAX, DT_I32, SH(1, 4), 1, &x);
  O(t, am1)->axis = 1, O(t, am0)->axis = 0, O(t, am0)->keepdims = true;
  int tk = mk(t, OP_TOPK, DT_I32, SH(3, 3), 1, &x), tk0 = mk(t, OP_TOPK, DT_I32, SH(2, 4), 1, &x);
  O(t, tk)->axis = 1, O(t, tk0)->axis = 0;
  int c = input(t, DT_F32, SH(2, 4), DATA(1, 3, 3, 2, 0, -1, 0, 5));
  int cs = OPF(t, OP_CUMSUM, SH(2, 4), c), cr = OPF(t, OP_CUMSUM_REV, SH(2, 4), c), c0 = OPF(t, OP_CUMSUM, SH(2, 4), c);
  O(t, cs)->axis = 1, O(t, cr)->axis = 1, O(t, c0)->axis = 0;
  run(t);
  EXPECT(t, am1, 1, 3, 1);
  EXPECT(t, am0, 0, 2, 0, 2);
  EXPECT(t, tk, 1, 2, 3, 3, 0, 2, 1, 3, 2);
  EXPECT(t, tk0, 0, 2, 0, 2, 2, 0, 2, 1);
  EXPECT(t, cs, 1, 4, 7, 9, 0, -1, -1, 4);
  EXPECT(t, cr, 9, 8, 5, 2, 4, 4, 5, 5);
  EXPECT(t, c0, 1, 3, 3, 2, 1, 2, 3, 7);
  tg_free(t);
}
END_TEST

START_TEST(test_v2_gather_one_hot_check) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(2, 3), DATA(1, 2, 3, 4, 5, 6));
  int idx = input(t, DT_I32, SH(2, 2), DATA(2, 0, 1, 1));
  int g = OPF(t, OP_GATHER, SH(2, 2), x, idx);
  O(t, g)->axis = 1;
  int dy = input(t, DT_F32, SH(2, 2), DATA(1, 10, 100, 1000));
  int gg = OPF(t, OP_GATHER_GRAD, SH(2, 3), idx, dy);
  O(t, gg)->axis = 1;
  int i0 = input(t, DT_I32, SH(2, 2), DATA(1, 0, 0, 1)); /* along axis 0, smaller on axis 1 */
  int g0 = OPF(t, OP_GATHER, SH(2, 2), x, i0), gg0 = OPF(t, OP_GATHER_GRAD, SH(2, 3), i0, dy);
  O(t, g0)->axis = O(t, gg0)->axis = 0;
  int oi = input(t, DT_I32, SH(3), DATA(2, 0, 5));
  int oh = OPF(t, OP_ONE_HOT, SH(3, 4), oi);
  int bad = input(t, DT_I32, SH(4), DATA(-1, 0, 3, 2));
  int ck1 = mk(t, OP_CHECK, DT_I32, SCALAR, 1, &bad), ck2 = mk(t, OP_CHECK, DT_I32, SCALAR, 1, &bad);
  O(t, ck1)->key = OP_GATHER, O(t, ck1)->value = 3, O(t, ck2)->key = OP_REM;
  run(t);
  EXPECT(t, g, 3, 1, 5, 5);
  EXPECT(t, gg, 10, 0, 1, 0, 1100, 0); /* the repeated index sums its gradients */
  EXPECT(t, g0, 4, 2, 1, 5);
  EXPECT(t, gg0, 100, 10, 0, 1, 1000, 0);
  EXPECT(t, oh, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0); /* out of range: a row of zeros */
  EXPECT(t, ck1, 2);
  EXPECT(t, ck2, 1);
  tg_free(t);
}
END_TEST

/* conv2d's patches: a 2x2 window over 3x3 (and back, counting each place's windows), and
 * a 3x3 window with stride 2 and padding 1. */
START_TEST(test_v2_patches) {
  Tg *t = tg_new();
  int x = input(t, DT_F32, SH(1, 1, 3, 3), DATA(1, 2, 3, 4, 5, 6, 7, 8, 9));
  int c = OPF(t, OP_IM2COL, SH(1, 4, 4), x);
  O(t, c)->axis = O(t, c)->axis2 = 2, O(t, c)->begin = 1, O(t, c)->end = 0;
  int ones = input(t, DT_F32, SH(1, 4, 4), DATA(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1));
  int back = OPF(t, OP_COL2IM, SH(1, 1, 3, 3), ones);
  O(t, back)->axis = O(t, back)->axis2 = 2, O(t, back)->begin = 1, O(t, back)->end = 0;
  int p = OPF(t, OP_IM2COL, SH(1, 9, 4), x);
  O(t, p)->axis = O(t, p)->axis2 = 3, O(t, p)->begin = 2, O(t, p)->end = 1;
  run(t);
  EXPECT(t, c, 1, 2, 4, 5, 2, 3, 5, 6, 4, 5, 7, 8, 5, 6, 8, 9);
  EXPECT(t, back, 1, 2, 1, 2, 4, 2, 1, 2, 1);
  /* window offset k = ki*3 + kj, place q = oh*2 + ow: x[2*oh - 1 + ki, 2*ow - 1 + kj] */
  EXPECT(t, p, 0, 0, 0, 5, 0, 0, 4, 6, 0, 0, 5, 0, 0, 2, 0, 8, 1, 3, 7, 9, 2, 0, 8, 0, 0, 5, 0, 0, 4, 6, 0, 0, 5, 0,
         0, 0);
  tg_free(t);
}
END_TEST

static Suite *refeval_suite(void) {
  Suite *s = suite_create("refeval");
  TCase *tc = tcase_create("ops");
  tcase_add_test(tc, test_unary);
  tcase_add_test(tc, test_binary_broadcast);
  tcase_add_test(tc, test_compare_where_cast);
  tcase_add_test(tc, test_gelu_grad);
  tcase_add_test(tc, test_reduce);
  tcase_add_test(tc, test_softmax);
  tcase_add_test(tc, test_transpose_reshape);
  tcase_add_test(tc, test_round_trips);
  tcase_add_test(tc, test_matmul);
  tcase_add_test(tc, test_embedding);
  tcase_add_test(tc, test_cross_entropy);
  tcase_add_test(tc, test_dropout);
  tcase_add_test(tc, test_nan_edges);
  tcase_add_test(tc, test_creation_and_sinks);
  tcase_add_test(tc, test_v2_elementwise);
  tcase_add_test(tc, test_v2_order_ops);
  tcase_add_test(tc, test_v2_gather_one_hot_check);
  tcase_add_test(tc, test_v2_patches);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(refeval_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
