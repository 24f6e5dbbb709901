/*
 * test_autodiff_v2.c — the gradients of the v2 ops that index by data or by order
 * (issue 13: cumsum and its reverse, gather and its gradient with repeated indices and
 * smaller index shapes, im2col and col2im, topk's values, conv2d as sema builds it, floor
 * without a gradient, pow(x, 0) at x = 0) against central finite differences of the reference evaluator, on
 * random shapes from fixed seeds. test_autodiff.c's method in small (its elementwise
 * tables hold sin, cos, silu and %): loss = sum(y * R), R a random INPUT, every float
 * PARAM's gradient (its PARAM_GRAD sinks summed) against (f(x+h) - f(x-h)) / 2h, h = 1e-6.
 */
#include "compiler/autodiff.h"
#include "runtime/mpl_rng.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAXOPS = 512, TRIALS = 8 };

typedef struct Tg {
  Arena arena;
  Graph *g;
  double *data[MAXOPS];
  uint64_t rng;
} Tg;

static uint64_t rng_u64(Tg *t) { return mpl_mix64(t->rng++); }
static int rng_int(Tg *t, int lo, int hi) { return lo + (int)(rng_u64(t) % (uint64_t)(hi - lo + 1)); }
static double rng_unif(Tg *t) { return -1.0 + 2.0 * mpl_uniform(rng_u64(t), 0); }

static Tg *tg_new(uint64_t seed) {
  Tg *t = calloc(1, sizeof *t);
  arena_init(&t->arena);
  t->g = graph_new(&t->arena);
  t->rng = seed * 0x9E3779B97F4A7C15ull + 1;
  return t;
}

static void tg_free(Tg *t) {
  for (int i = 0; i < MAXOPS; i++) free(t->data[i]);
  arena_free(&t->arena);
  free(t);
}

static Op *O(Tg *t, int id) { return t->g->ops[id]; }

static int mk(Tg *t, OpKind k, DType dt, Shape s, int nin, const int *in) {
  Op *op = graph_add(t->g, k, nin, in, (Loc){"t.mpl", 1, 1});
  op->shape = s;
  op->dtype = dt;
  return op->id;
}

/* A leaf of shape s: a float PARAM (values in [-1, 1]) or an i32 INPUT (values in [0, hi)). */
static int leaf(Tg *t, OpKind k, DType dt, Shape s, int hi) {
  int id = mk(t, k, dt, s, 0, NULL);
  O(t, id)->name = arena_printf(&t->arena, "leaf%d", id);
  int64_t n = shape_numel(&s);
  t->data[id] = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) t->data[id][i] = dt == DT_I32 ? rng_int(t, 0, hi - 1) : rng_unif(t);
  return id;
}
static int param(Tg *t, Shape s) { return leaf(t, OP_PARAM, DT_F32, s, 0); }

static Shape rand_shape(Tg *t, int minrank, int maxrank, int maxd) {
  Shape s = {.rank = rng_int(t, minrank, maxrank)};
  for (int i = 0; i < s.rank; i++) s.d[i] = rng_int(t, 1, maxd);
  return s;
}

/* loss = sum(y * R) */
static void finish_loss(Tg *t, int y) {
  int r = leaf(t, OP_INPUT, DT_F32, O(t, y)->shape, 0);
  int m = mk(t, OP_MUL, DT_F32, O(t, y)->shape, 2, (int[]){y, r});
  int l = mk(t, OP_SUM, DT_F32, (Shape){0}, 1, &m);
  O(t, l)->axis = AXIS_ALL;
  t->g->loss = l;
}

static double eval_loss(Tg *t, int nfwd) {
  Graph fg = *t->g;
  fg.nops = nfwd;
  double **v = calloc((size_t)nfwd, sizeof *v);
  for (int i = 0; i < nfwd; i++) v[i] = t->data[i];
  ref_eval(&fg, v, NULL);
  double l = v[t->g->loss][0];
  ref_free(&fg, v);
  free(v);
  return l;
}

/* Differentiates t's graph; every float PARAM's gradient against finite differences. */
static void check_grads(Tg *t, const char *what) {
  Graph *g = t->g;
  int nfwd = g->nops;
  Diag d = {.arena = &t->arena, .out = stderr, .max_errors = 50};
  ck_assert_int_eq(ad_backward(g, &d), 0);
  double **v = calloc((size_t)g->nops, sizeof *v);
  for (int i = 0; i < nfwd; i++) v[i] = t->data[i];
  ref_eval(g, v, NULL);
  for (int p = 0; p < nfwd; p++) {
    if (O(t, p)->kind != OP_PARAM) continue;
    int64_t n = shape_numel(&O(t, p)->shape);
    for (int64_t e = 0; e < n; e++) {
      double an = 0, h = 1e-6, x = t->data[p][e];
      for (int i = nfwd; i < g->nops; i++)
        if (O(t, i)->kind == OP_PARAM_GRAD && O(t, i)->key == p) an += v[i][e];
      t->data[p][e] = x + h;
      double fp = eval_loss(t, nfwd);
      t->data[p][e] = x - h;
      double fm = eval_loss(t, nfwd), num = (fp - fm) / (2 * h);
      t->data[p][e] = x;
      ck_assert_msg(fabs(an - num) <= 1e-6 * fmax(fabs(an), fabs(num)) + 1e-8,
                    "%s: leaf %%%d element %lld: analytic %.12g, numeric %.12g", what, p, (long long)e, an, num);
    }
  }
  ref_free(g, v);
  free(v);
}

/* ---- the cases -------------------------------------------------------------------------------- */

START_TEST(test_cumsum) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(100 + (uint64_t)trial);
    Shape s = rand_shape(t, 1, 3, 5);
    int x = param(t, s), y = mk(t, trial % 2 ? OP_CUMSUM_REV : OP_CUMSUM, DT_F32, s, 1, &x);
    O(t, y)->axis = rng_int(t, 0, s.rank - 1);
    finish_loss(t, y);
    check_grads(t, "cumsum");
    tg_free(t);
  }
}
END_TEST

/* gather along a random axis: indices with repeats, no larger than x on the other axes. */
START_TEST(test_gather) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(200 + (uint64_t)trial);
    Shape xs = rand_shape(t, 1, 3, 4), is = xs;
    int axis = rng_int(t, 0, xs.rank - 1);
    for (int i = 0; i < is.rank; i++) is.d[i] = i == axis ? rng_int(t, 1, 5) : rng_int(t, 1, (int)xs.d[i]);
    int x = param(t, xs), idx = leaf(t, OP_INPUT, DT_I32, is, (int)xs.d[axis]);
    int y = mk(t, OP_GATHER, DT_F32, is, 2, (int[]){x, idx});
    O(t, y)->axis = axis;
    if (trial % 2) { /* the gradient op itself, linear in dy */
      int dy = param(t, is);
      y = mk(t, OP_GATHER_GRAD, DT_F32, xs, 2, (int[]){idx, dy});
      O(t, y)->axis = axis;
    }
    finish_loss(t, y);
    check_grads(t, trial % 2 ? "gather_grad" : "gather");
    tg_free(t);
  }
}
END_TEST

/* Patches of random geometry (kernel up to 3, stride up to 3, padding up to 2), and back. */
START_TEST(test_im2col) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(300 + (uint64_t)trial);
    int64_t N = rng_int(t, 1, 2), C = rng_int(t, 1, 2), H = rng_int(t, 1, 5), W = rng_int(t, 1, 5);
    int64_t pad = rng_int(t, 0, 2), st = rng_int(t, 1, 3);
    int64_t hmax = H + 2 * pad < 3 ? H + 2 * pad : 3, wmax = W + 2 * pad < 3 ? W + 2 * pad : 3;
    int64_t kh = rng_int(t, 1, (int)hmax), kw = rng_int(t, 1, (int)wmax);
    int64_t P = ((H + 2 * pad - kh) / st + 1) * ((W + 2 * pad - kw) / st + 1);
    Shape xs = {4, {N, C, H, W}}, cs = {3, {N, C * kh * kw, P}};
    bool back = trial % 2;
    int x = param(t, back ? cs : xs), y = mk(t, back ? OP_COL2IM : OP_IM2COL, DT_F32, back ? xs : cs, 1, &x);
    O(t, y)->axis = (int)kh, O(t, y)->axis2 = (int)kw, O(t, y)->begin = st, O(t, y)->end = pad;
    finish_loss(t, y);
    check_grads(t, back ? "col2im" : "im2col");
    tg_free(t);
  }
}
END_TEST

/* topk's values: a gather by the indices, the gradient through the values only. */
START_TEST(test_topk_values) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(400 + (uint64_t)trial);
    Shape s = rand_shape(t, 1, 3, 5), ks = s;
    int axis = rng_int(t, 0, s.rank - 1);
    ks.d[axis] = rng_int(t, 1, (int)s.d[axis]);
    int x = param(t, s), i = mk(t, OP_TOPK, DT_I32, ks, 1, &x);
    int y = mk(t, OP_GATHER, DT_F32, ks, 2, (int[]){x, i});
    O(t, i)->axis = O(t, y)->axis = axis;
    finish_loss(t, y);
    check_grads(t, "topk");
    tg_free(t);
  }
}
END_TEST

/* conv2d as sema builds it: im2col(x), w as [O, C*kh*kw], one product per image. */
START_TEST(test_conv2d) {
  for (int trial = 0; trial < TRIALS; trial++) {
    Tg *t = tg_new(500 + (uint64_t)trial);
    int64_t N = rng_int(t, 1, 2), C = rng_int(t, 1, 2), O_ = rng_int(t, 1, 3), H = rng_int(t, 2, 5), W = rng_int(t, 2, 5);
    int64_t k = 2, pad = rng_int(t, 0, 1), st = rng_int(t, 1, 2);
    int64_t Ho = (H + 2 * pad - k) / st + 1, Wo = (W + 2 * pad - k) / st + 1, K = C * k * k;
    int x = param(t, (Shape){4, {N, C, H, W}}), w = param(t, (Shape){4, {O_, C, k, k}});
    int cols = mk(t, OP_IM2COL, DT_F32, (Shape){3, {N, K, Ho * Wo}}, 1, &x);
    O(t, cols)->axis = O(t, cols)->axis2 = (int)k, O(t, cols)->begin = st, O(t, cols)->end = pad;
    int w2 = mk(t, OP_RESHAPE, DT_F32, (Shape){2, {O_, K}}, 1, &w);
    int y = mk(t, OP_MATMUL, DT_F32, (Shape){3, {N, O_, Ho * Wo}}, 2, (int[]){w2, cols});
    finish_loss(t, mk(t, OP_RESHAPE, DT_F32, (Shape){4, {N, O_, Ho, Wo}}, 1, &y));
    check_grads(t, "conv2d");
    tg_free(t);
  }
}
END_TEST

/* floor's gradient is zero (as PyTorch's; zero almost everywhere): its param gets one, of
 * zeros (finite differences agree), so that weight decay still reaches it. */
START_TEST(test_floor_flat) {
  Tg *t = tg_new(600);
  int x = param(t, (Shape){2, {3, 4}});
  finish_loss(t, mk(t, OP_FLOOR, DT_F32, (Shape){2, {3, 4}}, 1, &x));
  check_grads(t, "floor");
  int sinks = 0;
  for (int i = 0; i < t->g->nops; i++) sinks += O(t, i)->kind == OP_PARAM_GRAD;
  ck_assert_int_eq(sinks, 1);
  tg_free(t);
}
END_TEST

/* pow(x, 0) has a zero gradient, also where x = 0 (as PyTorch's: c * x^(c-1) there is
 * 0 * inf, nan, which an update would write into the param); pow(x, 2) and pow(x, 3) at 0
 * keep theirs (finite differences) */
START_TEST(test_pow_at_zero) {
  for (int c = 0; c <= 3; c += c ? 1 : 2) {
    Tg *t = tg_new(700 + (uint64_t)c);
    int x = param(t, (Shape){2, {2, 3}});
    t->data[x][0] = t->data[x][4] = 0.0;
    int y = mk(t, OP_POW, DT_F32, (Shape){2, {2, 3}}, 1, &x);
    O(t, y)->value = c;
    finish_loss(t, y);
    check_grads(t, c ? "pow(x, c)" : "pow(x, 0)");
    tg_free(t);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("autodiff_v2");
  TCase *tc = tcase_create("ops");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_cumsum);
  tcase_add_test(tc, test_gather);
  tcase_add_test(tc, test_im2col);
  tcase_add_test(tc, test_topk_values);
  tcase_add_test(tc, test_conv2d);
  tcase_add_test(tc, test_floor_flat);
  tcase_add_test(tc, test_pow_at_zero);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
