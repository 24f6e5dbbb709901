/*
 * autodiff.c — reverse-mode automatic differentiation over the graph IR.
 *
 * ad_backward appends the backward of the loss to the same graph: one
 * vector-Jacobian rule per primitive (the table ad_rules), written with graph ops.
 *
 * Invariants:
 *  - Forward ops are never changed; backward ops get fwd_of, stage, recompute and
 *    loc of the forward op they derive from, and a replicated layout.
 *  - Only values on a path from a differentiated leaf (every PARAM by default) to
 *    the loss get a backward ("active"); integer and bool values carry no gradient.
 *  - The contributions to a value's gradient are summed left to right in
 *    (consumer id, input slot) order, whatever order they were made in; an add of two
 *    terms runs on the earlier of their stages (never before the value's own stage), so
 *    a value sent to later stages and used there several times gets one gradient back
 *    from each stage, summed on the way, not one per use.
 *  - A PARAM's gradient is never summed in the graph: every active use (consumer
 *    edge, in consumer id order) gets its own PARAM_GRAD sink, use = 0, 1, ...
 *  - Phase: a backward op all of whose consumer paths end in PARAM_GRAD sinks is
 *    PH_BWD_W (weight gradient); every other backward op is PH_BWD_B. The gradient
 *    of an activation counts as an end of its own (it is what earlier layers and
 *    earlier stages wait for), so it and everything feeding it are BWD_B. An
 *    activation is a forward value that depends on a model INPUT (or a RECV); a
 *    value made from params and constants only (transpose(W)) is weight-like.
 *    Without that, every gradient would end in some param's sink and all would be W.
 *    A gradient read on another stage than its own is BWD_B too (the partition sends
 *    gradients between stages with the input gradients alone), with all that feeds it.
 */
#include "autodiff.h"

#include <stdlib.h>
#include <string.h>

/* One gradient contribution to a value, from input slot `slot` of op `consumer`. */
typedef struct Contrib {
  int consumer, slot, grad;
} Contrib;

typedef struct Ad {
  Graph *g;
  int nfwd;          /* forward ops: ids [0, nfwd) */
  const bool *src;   /* [nfwd] differentiated leaves (NULL: every PARAM) */
  bool *from_src;    /* [nfwd] depends on a differentiated leaf through differentiable edges */
  bool *active;      /* [nfwd] from_src and reaches the loss */
  bool *activation;  /* [nfwd] depends on an INPUT or RECV (not weight-like) */
  int *b_roots;      /* gradients of activations: BWD_B whatever they feed (malloc'd) */
  int nb_roots, cap_b_roots;
  int **use;         /* [nfwd][nin] PARAM_GRAD use index of an edge into a PARAM, else -1 */
  Contrib **contrib; /* [nfwd] contributions made so far */
  int *ncontrib;
  const Op *cur;     /* the forward op whose backward is being built */
  const bool *need;  /* [cur->nin] which inputs of cur want a gradient */
} Ad;

typedef void AdRuleFn(Ad *a, const Op *op, int dy, int *dx);

/* ---- building backward ops ------------------------------------------------------ */

static const Shape *shp(Ad *a, int id) { return &a->g->ops[id]->shape; }
static DType dty(Ad *a, int id) { return a->g->ops[id]->dtype; }

static Op *ad_op(Ad *a, OpKind k, int nin, const int *in, const Shape *s, DType t) {
  Op *op = graph_add(a->g, k, nin, in, a->cur->loc);
  op->shape = *s;
  op->dtype = t;
  op->stage = a->cur->stage;
  op->recompute = a->cur->recompute;
  op->fwd_of = a->cur->id;
  op->phase = PH_BWD_B;
  return op;
}

static int b_full(Ad *a, double v) {
  Shape s = {0};
  Op *op = ad_op(a, OP_FULL, 0, NULL, &s, a->cur->dtype);
  op->value = v;
  return op->id;
}

static int b_un(Ad *a, OpKind k, int x) { return ad_op(a, k, 1, &x, shp(a, x), dty(a, x))->id; }

static int b_bin(Ad *a, OpKind k, int x, int y) {
  Shape s;
  if (!shape_broadcast(shp(a, x), shp(a, y), &s)) die("autodiff: %%%d and %%%d do not broadcast", x, y);
  DType t = op_is_compare(k) ? DT_BOOL : dty(a, x) == DT_BOOL ? dty(a, y) : dty(a, x);
  int in[2] = {x, y};
  return ad_op(a, k, 2, in, &s, t)->id;
}

static int b_where(Ad *a, int m, int x, int y) {
  Shape s, s2;
  if (!shape_broadcast(shp(a, m), shp(a, x), &s) || !shape_broadcast(&s, shp(a, y), &s2)) die("autodiff: where shapes");
  int in[3] = {m, x, y};
  return ad_op(a, OP_WHERE, 3, in, &s2, dty(a, x))->id;
}

static int b_cast(Ad *a, int x, DType t) {
  if (dty(a, x) == t) return x;
  return ad_op(a, OP_CAST, 1, &x, shp(a, x), t)->id;
}

static int b_shaped(Ad *a, OpKind k, int x, const Shape *s) {
  if (shape_eq(shp(a, x), s)) return x;
  return ad_op(a, k, 1, &x, s, dty(a, x))->id;
}
static int b_sum_to(Ad *a, int x, const Shape *s) { return b_shaped(a, OP_SUM_TO, x, s); }
static int b_expand(Ad *a, int x, const Shape *s) { return b_shaped(a, OP_EXPAND, x, s); }
static int b_reshape(Ad *a, int x, const Shape *s) { return b_shaped(a, OP_RESHAPE, x, s); }

/* s with the reduced axis kept as 1 (every dim 1 for AXIS_ALL). */
static Shape keepdims_shape(const Shape *s, int axis) {
  Shape r = *s;
  for (int i = 0; i < r.rank; i++)
    if (axis == AXIS_ALL || i == axis) r.d[i] = 1;
  return r;
}

static int norm_axis(int axis, int rank) {
  if (axis == AXIS_ALL) return axis;
  int r = axis < 0 ? axis + rank : axis;
  if (r < 0 || r >= rank) die("autodiff: axis %d out of range for rank %d", axis, rank);
  return r;
}

static int b_sum_keep(Ad *a, int x, int axis) {
  Shape s = keepdims_shape(shp(a, x), axis);
  Op *op = ad_op(a, OP_SUM, 1, &x, &s, dty(a, x));
  op->axis = axis;
  op->keepdims = true;
  return op->id;
}

/* The matmul's output shape: broadcast batch dims, then [m, n]. */
static Shape mm_shape(const Shape *x, const Shape *y, bool ta, bool tb) {
  if (x->rank < 2 || y->rank < 2) die("autodiff: matmul shape of rank %d and %d", x->rank, y->rank);
  Shape xb = *x, yb = *y, s;
  xb.rank -= 2;
  yb.rank -= 2;
  if (!shape_broadcast(&xb, &yb, &s)) die("autodiff: matmul batch dims do not broadcast");
  s.d[s.rank++] = ta ? x->d[x->rank - 1] : x->d[x->rank - 2];
  s.d[s.rank++] = tb ? y->d[y->rank - 2] : y->d[y->rank - 1];
  return s;
}

static int b_matmul(Ad *a, int x, int y, bool ta, bool tb) {
  Shape s = mm_shape(shp(a, x), shp(a, y), ta, tb);
  int in[2] = {x, y};
  Op *op = ad_op(a, OP_MATMUL, 2, in, &s, dty(a, y));
  op->ta = ta;
  op->tb = tb;
  return op->id;
}

/* Gives input slot s of the current op the gradient v, summed down to its shape. */
static void give(Ad *a, int *dx, int s, int v) {
  if (a->need[s]) dx[s] = b_sum_to(a, v, shp(a, a->cur->in[s]));
}

/* ---- vector-Jacobian rules: elementwise --------------------------------------------- */

static void rule_neg(Ad *a, const Op *op, int dy, int *dx) {
  (void)op;
  give(a, dx, 0, b_un(a, OP_NEG, dy));
}
static void rule_exp(Ad *a, const Op *op, int dy, int *dx) { give(a, dx, 0, b_bin(a, OP_MUL, dy, op->id)); }
static void rule_log(Ad *a, const Op *op, int dy, int *dx) { give(a, dx, 0, b_bin(a, OP_DIV, dy, op->in[0])); }

/* sqrt: dy * 0.5 / y */
static void rule_sqrt(Ad *a, const Op *op, int dy, int *dx) {
  give(a, dx, 0, b_bin(a, OP_DIV, b_bin(a, OP_MUL, dy, b_full(a, 0.5)), op->id));
}

/* rsqrt: y = x^-1/2, dy * -0.5 * y / x */
static void rule_rsqrt(Ad *a, const Op *op, int dy, int *dx) {
  int t = b_bin(a, OP_DIV, b_bin(a, OP_MUL, dy, op->id), op->in[0]);
  give(a, dx, 0, b_bin(a, OP_MUL, t, b_full(a, -0.5)));
}

/* tanh: dy * (1 - y*y) */
static void rule_tanh(Ad *a, const Op *op, int dy, int *dx) {
  int s = b_bin(a, OP_SUB, b_full(a, 1.0), b_bin(a, OP_MUL, op->id, op->id));
  give(a, dx, 0, b_bin(a, OP_MUL, dy, s));
}

/* sigmoid: dy * y * (1 - y) */
static void rule_sigmoid(Ad *a, const Op *op, int dy, int *dx) {
  int s = b_bin(a, OP_MUL, op->id, b_bin(a, OP_SUB, b_full(a, 1.0), op->id));
  give(a, dx, 0, b_bin(a, OP_MUL, dy, s));
}

static void rule_relu(Ad *a, const Op *op, int dy, int *dx) { give(a, dx, 0, b_bin(a, OP_RELU_GRAD, op->in[0], dy)); }
static void rule_gelu(Ad *a, const Op *op, int dy, int *dx) { give(a, dx, 0, b_bin(a, OP_GELU_GRAD, op->in[0], dy)); }
static void rule_abs(Ad *a, const Op *op, int dy, int *dx) {
  give(a, dx, 0, b_bin(a, OP_MUL, dy, b_un(a, OP_SIGN, op->in[0])));
}

/* floor: zero (as PyTorch's: a param read only through floor gets a zero gradient, so
 * adamw's weight decay still applies to it, where a param with no gradient is left as is) */
static void rule_floor(Ad *a, const Op *op, int dy, int *dx) {
  (void)dy;
  give(a, dx, 0, b_expand(a, b_full(a, 0.0), shp(a, op->in[0])));
}

/* pow(x, c): dy * c * x^(c-1); for c = 0 zero, as PyTorch's (0 * 0^-1 would be nan at x = 0) */
static void rule_pow(Ad *a, const Op *op, int dy, int *dx) {
  if (op->value == 0.0) return rule_floor(a, op, dy, dx);
  Op *p = ad_op(a, OP_POW, 1, &op->in[0], shp(a, op->in[0]), dty(a, op->in[0]));
  p->value = op->value - 1.0;
  give(a, dx, 0, b_bin(a, OP_MUL, dy, b_bin(a, OP_MUL, b_full(a, op->value), p->id)));
}

/* cast between float types: the gradient cast back. */
static void rule_cast(Ad *a, const Op *op, int dy, int *dx) { give(a, dx, 0, b_cast(a, dy, dty(a, op->in[0]))); }

static void rule_add(Ad *a, const Op *op, int dy, int *dx) {
  (void)op;
  give(a, dx, 0, dy);
  give(a, dx, 1, dy);
}

static void rule_sub(Ad *a, const Op *op, int dy, int *dx) {
  (void)op;
  give(a, dx, 0, dy);
  if (a->need[1]) give(a, dx, 1, b_un(a, OP_NEG, dy));
}

static void rule_mul(Ad *a, const Op *op, int dy, int *dx) {
  if (a->need[0]) give(a, dx, 0, b_bin(a, OP_MUL, dy, op->in[1]));
  if (a->need[1]) give(a, dx, 1, b_bin(a, OP_MUL, dy, op->in[0]));
}

/* y = u / v: du = dy / v, dv = -dy * y / v */
static void rule_div(Ad *a, const Op *op, int dy, int *dx) {
  if (a->need[0]) give(a, dx, 0, b_bin(a, OP_DIV, dy, op->in[1]));
  if (a->need[1]) give(a, dx, 1, b_un(a, OP_NEG, b_bin(a, OP_DIV, b_bin(a, OP_MUL, dy, op->id), op->in[1])));
}

/* maximum/minimum: the gradient goes to the winner; ties split it evenly. */
static void rule_minmax(Ad *a, const Op *op, int dy, int *dx) {
  int u = op->in[0], v = op->in[1];
  OpKind win0 = op->kind == OP_MAXIMUM ? OP_GT : OP_LT, win1 = op->kind == OP_MAXIMUM ? OP_LT : OP_GT;
  int half = b_bin(a, OP_MUL, dy, b_full(a, 0.5)), zero = b_full(a, 0.0);
  int tie = b_where(a, b_bin(a, OP_EQ, u, v), half, zero);
  if (a->need[0]) give(a, dx, 0, b_where(a, b_bin(a, win0, u, v), dy, tie));
  if (a->need[1]) give(a, dx, 1, b_where(a, b_bin(a, win1, u, v), dy, tie));
}

/* where(mask, u, v): du = where(mask, dy, 0), dv = where(mask, 0, dy). */
static void rule_where(Ad *a, const Op *op, int dy, int *dx) {
  int zero = b_full(a, 0.0);
  if (a->need[1]) give(a, dx, 1, b_where(a, op->in[0], dy, zero));
  if (a->need[2]) give(a, dx, 2, b_where(a, op->in[0], zero, dy));
}

/* relu_grad(x, g) is linear in g (and flat in x almost everywhere). */
static void rule_relu_grad(Ad *a, const Op *op, int dy, int *dx) {
  give(a, dx, 1, b_bin(a, OP_RELU_GRAD, op->in[0], dy));
}

/*
 * gelu_grad(x, g) = g * gelu'(x): d/dg = gelu_grad(x, dy); d/dx = dy * g * gelu''(x) with
 * gelu''(x) = s * (u' - x t u'^2 + 3kc x^2), t = tanh(k(x + c x^3)), s = 1 - t^2, u' = k(1 + 3c x^2).
 */
static void rule_gelu_grad(Ad *a, const Op *op, int dy, int *dx) {
  const double k = 0.7978845608028654, c = 0.044715;
  int x = op->in[0], g = op->in[1];
  if (a->need[1]) give(a, dx, 1, b_bin(a, OP_GELU_GRAD, x, dy));
  if (!a->need[0]) return;
  int x2 = b_bin(a, OP_MUL, x, x);
  int u = b_bin(a, OP_MUL, b_full(a, k), b_bin(a, OP_ADD, x, b_bin(a, OP_MUL, b_full(a, c), b_bin(a, OP_MUL, x2, x))));
  int t = b_un(a, OP_TANH, u);
  int s = b_bin(a, OP_SUB, b_full(a, 1.0), b_bin(a, OP_MUL, t, t));
  int up = b_bin(a, OP_MUL, b_full(a, k), b_bin(a, OP_ADD, b_full(a, 1.0), b_bin(a, OP_MUL, b_full(a, 3 * c), x2)));
  int term = b_bin(a, OP_SUB, up, b_bin(a, OP_MUL, b_bin(a, OP_MUL, x, t), b_bin(a, OP_MUL, up, up)));
  term = b_bin(a, OP_ADD, term, b_bin(a, OP_MUL, b_full(a, 3 * k * c), x2));
  int gpp = b_bin(a, OP_MUL, s, term);
  give(a, dx, 0, b_bin(a, OP_MUL, b_bin(a, OP_MUL, dy, g), gpp));
}

/* ---- reductions ------------------------------------------------------------------- */

/* dy of a reduction, reshaped so that it broadcasts against the input. */
static int reduced_dy(Ad *a, const Op *op, int dy) {
  Shape ks = keepdims_shape(shp(a, op->in[0]), norm_axis(op->axis, shp(a, op->in[0])->rank));
  return b_reshape(a, dy, &ks);
}

static void rule_sum(Ad *a, const Op *op, int dy, int *dx) {
  dx[0] = b_expand(a, reduced_dy(a, op, dy), shp(a, op->in[0]));
}

static void rule_mean(Ad *a, const Op *op, int dy, int *dx) {
  const Shape *xs = shp(a, op->in[0]);
  int ax = norm_axis(op->axis, xs->rank);
  double n = ax == AXIS_ALL ? (double)shape_numel(xs) : (double)xs->d[ax];
  int e = b_expand(a, reduced_dy(a, op, dy), xs);
  dx[0] = b_bin(a, OP_MUL, e, b_full(a, 1.0 / n));
}

/* amax: the gradient split evenly among the elements equal to the max. */
static void rule_amax(Ad *a, const Op *op, int dy, int *dx) {
  int x = op->in[0], ax = norm_axis(op->axis, shp(a, x)->rank);
  int ymax = reduced_dy(a, op, op->id);
  int mask = b_cast(a, b_bin(a, OP_EQ, x, ymax), dty(a, x));
  int share = b_bin(a, OP_DIV, reduced_dy(a, op, dy), b_sum_keep(a, mask, ax));
  dx[0] = b_bin(a, OP_MUL, mask, share);
}

/* softmax: dx = y * (dy - sum(dy * y, axis, keepdims)) */
static void rule_softmax(Ad *a, const Op *op, int dy, int *dx) {
  int ax = norm_axis(op->axis, op->shape.rank);
  int s = b_sum_keep(a, b_bin(a, OP_MUL, dy, op->id), ax);
  dx[0] = b_bin(a, OP_MUL, op->id, b_bin(a, OP_SUB, dy, s));
}

/* log_softmax: dx = dy - exp(y) * sum(dy, axis, keepdims) */
static void rule_log_softmax(Ad *a, const Op *op, int dy, int *dx) {
  int ax = norm_axis(op->axis, op->shape.rank);
  int s = b_sum_keep(a, dy, ax);
  dx[0] = b_bin(a, OP_SUB, dy, b_bin(a, OP_MUL, b_un(a, OP_EXP, op->id), s));
}

/* ---- shape ops ------------------------------------------------------------------------ */

static void rule_reshape(Ad *a, const Op *op, int dy, int *dx) { dx[0] = b_reshape(a, dy, shp(a, op->in[0])); }
static void rule_expand(Ad *a, const Op *op, int dy, int *dx) { dx[0] = b_sum_to(a, dy, shp(a, op->in[0])); }
static void rule_sum_to(Ad *a, const Op *op, int dy, int *dx) { dx[0] = b_expand(a, dy, shp(a, op->in[0])); }

static void rule_transpose(Ad *a, const Op *op, int dy, int *dx) {
  Op *t = ad_op(a, OP_TRANSPOSE, 1, &dy, shp(a, op->in[0]), dty(a, dy));
  t->axis = op->axis;
  t->axis2 = op->axis2;
  dx[0] = t->id;
}

static int b_slice(Ad *a, int x, int axis, int64_t begin, int64_t end) {
  Shape s = *shp(a, x);
  int ax = norm_axis(axis, s.rank);
  s.d[ax] = end - begin;
  Op *op = ad_op(a, OP_SLICE, 1, &x, &s, dty(a, x));
  op->axis = ax;
  op->begin = begin;
  op->end = end;
  return op->id;
}

static void rule_slice(Ad *a, const Op *op, int dy, int *dx) {
  Op *p = ad_op(a, OP_PAD, 1, &dy, shp(a, op->in[0]), dty(a, dy));
  p->axis = norm_axis(op->axis, op->shape.rank);
  p->begin = op->begin;
  dx[0] = p->id;
}

static void rule_pad(Ad *a, const Op *op, int dy, int *dx) {
  int ax = norm_axis(op->axis, op->shape.rank);
  dx[0] = b_slice(a, dy, ax, op->begin, op->begin + shp(a, op->in[0])->d[ax]);
}

static void rule_concat(Ad *a, const Op *op, int dy, int *dx) {
  int ax = norm_axis(op->axis, op->shape.rank);
  int64_t off = 0;
  for (int j = 0; j < op->nin; j++) {
    int64_t n = shp(a, op->in[j])->d[ax];
    if (a->need[j]) dx[j] = b_slice(a, dy, ax, off, off + n);
    off += n;
  }
}

/* ---- matmul ------------------------------------------------------------------------------ */

/*
 * y = op(A) @ op(B), op = transpose when ta/tb. With A' = op(A), B' = op(B):
 * dA' = dy @ B'^T, dB' = A'^T @ dy; transposed back where ta/tb, and summed down
 * to A's and B's shapes over broadcast batch dims. A rank-2 B against a batched A
 * (x @ W) gets its gradient as one product over all rows (A and dy flattened).
 * dA, dB: -1 when not wanted, else set to the gradient op, of shape sa / sb.
 */
static void mm_grads(Ad *a, int A, int B, int dy, bool ta, bool tb, const Shape *sa, const Shape *sb, int *dA,
                     int *dB) {
  if (*dA >= 0)
    *dA = b_sum_to(a, ta ? b_matmul(a, B, dy, tb, true) : b_matmul(a, dy, B, false, !tb), sa);
  if (*dB < 0) return;
  const Shape *as = shp(a, A), *ys = shp(a, dy);
  if (sb->rank == 2 && as->rank > 2 && !ta) {
    int64_t k = as->d[as->rank - 1], n = ys->d[ys->rank - 1], rows = shape_numel(as) / k;
    Shape s2 = {2, {rows, k}}, d2 = {2, {rows, n}};
    int A2 = b_reshape(a, A, &s2), dy2 = b_reshape(a, dy, &d2);
    *dB = tb ? b_matmul(a, dy2, A2, true, false) : b_matmul(a, A2, dy2, true, false);
    return;
  }
  *dB = b_sum_to(a, tb ? b_matmul(a, dy, A, true, ta) : b_matmul(a, A, dy, !ta, false), sb);
}

/* NumPy's promotion of a rank-1 operand: [k] is [1, k] as A, [k, 1] as B. */
static Shape mm_promote(const Shape *s, bool is_b) {
  if (s->rank != 1) return *s;
  return is_b ? (Shape){2, {s->d[0], 1}} : (Shape){2, {1, s->d[0]}};
}

/* A rank-1 operand is reshaped to its matrix and the output's dropped dims restored. */
static void rule_matmul(Ad *a, const Op *op, int dy, int *dx) {
  int A = op->in[0], B = op->in[1], dA = a->need[0] ? 0 : -1, dB = a->need[1] ? 0 : -1;
  Shape av = mm_promote(shp(a, A), false), bv = mm_promote(shp(a, B), true);
  if (av.rank < 2 || bv.rank < 2) die("autodiff: matmul of a rank-0 operand");
  Shape yv = mm_shape(&av, &bv, op->ta, op->tb);
  int Av = dB >= 0 ? b_reshape(a, A, &av) : A, Bv = dA >= 0 ? b_reshape(a, B, &bv) : B;
  mm_grads(a, Av, Bv, b_reshape(a, dy, &yv), op->ta, op->tb, &av, &bv, &dA, &dB);
  if (dA >= 0) dx[0] = b_reshape(a, dA, shp(a, A));
  if (dB >= 0) dx[1] = b_reshape(a, dB, shp(a, B));
}

/* ---- neural ------------------------------------------------------------------------------- */

static void rule_embedding(Ad *a, const Op *op, int dy, int *dx) {
  int in[2] = {op->in[0], dy};
  dx[1] = ad_op(a, OP_EMBEDDING_GRAD, 2, in, shp(a, op->in[1]), dty(a, dy))->id;
}

/* embedding_grad(idx, g) is linear in g: its transpose gathers the rows back. */
static void rule_embedding_grad(Ad *a, const Op *op, int dy, int *dx) {
  int in[2] = {op->in[0], dy};
  dx[1] = ad_op(a, OP_EMBEDDING, 2, in, shp(a, op->in[1]), dty(a, dy))->id;
}

static void rule_cross_entropy(Ad *a, const Op *op, int dy, int *dx) {
  int in[3] = {op->in[0], op->in[1], dy};
  dx[0] = ad_op(a, OP_CE_GRAD, 3, in, shp(a, op->in[0]), dty(a, op->in[0]))->id;
}

/* dropout: the same mask (same key and p, and the same tp split: the mask of a split
 * value is drawn at the whole value's indices), the same scale. */
static void rule_dropout(Ad *a, const Op *op, int dy, int *dx) {
  Op *d = ad_op(a, OP_DROPOUT, 1, &dy, &op->shape, dty(a, dy));
  d->value = op->value;
  d->key = op->key;
  d->step_mask = op->step_mask;
  d->layout = op->layout;
  dx[0] = d->id;
}

/* Tensor parallelism (shard.c): the collectives' conjugates, Megatron's f and g. */
static Op *b_collective(Ad *a, OpKind k, int x, const Op *like_in) {
  Op *op = ad_op(a, k, 1, &x, &like_in->shape, dty(a, x));
  op->axis = a->cur->axis;
  op->key = a->cur->key;
  return op;
}
static void rule_tp_enter(Ad *a, const Op *op, int dy, int *dx) {
  dx[0] = b_collective(a, OP_ALLREDUCE, dy, a->g->ops[op->in[0]])->id;
}
static void rule_allreduce(Ad *a, const Op *op, int dy, int *dx) { dx[0] = dy; }
static void rule_allgather(Ad *a, const Op *op, int dy, int *dx) { /* my part of the whole gradient */
  Op *sl = b_collective(a, OP_TP_SLICE, dy, a->g->ops[op->in[0]]);
  sl->layout = a->g->ops[op->in[0]]->layout;
  dx[0] = sl->id;
}
static void rule_tp_slice(Ad *a, const Op *op, int dy, int *dx) { /* every part, gathered */
  dx[0] = b_collective(a, OP_ALLGATHER, dy, a->g->ops[op->in[0]])->id;
}
/* y = my part of sum_r x_r: each x_r's gradient is the whole of dy, gathered. */
static void rule_reduce_scatter(Ad *a, const Op *op, int dy, int *dx) {
  dx[0] = b_collective(a, OP_ALLGATHER, dy, a->g->ops[op->in[0]])->id;
}

/* ---- v2 ops with kernels of their own (issue 13, item 1) ---------------------------------------- */

static void rule_sin(Ad *a, const Op *op, int dy, int *dx) {
  give(a, dx, 0, b_bin(a, OP_MUL, dy, b_un(a, OP_COS, op->in[0])));
}
static void rule_cos(Ad *a, const Op *op, int dy, int *dx) {
  give(a, dx, 0, b_bin(a, OP_MUL, dy, b_un(a, OP_NEG, b_un(a, OP_SIN, op->in[0]))));
}

/* silu, as PyTorch: dy * s * (1 + x * (1 - s)), s = sigmoid(x) */
static void rule_silu(Ad *a, const Op *op, int dy, int *dx) {
  int x = op->in[0], s = b_un(a, OP_SIGMOID, x);
  int t = b_bin(a, OP_ADD, b_full(a, 1.0), b_bin(a, OP_MUL, x, b_bin(a, OP_SUB, b_full(a, 1.0), s)));
  give(a, dx, 0, b_bin(a, OP_MUL, dy, b_bin(a, OP_MUL, s, t)));
}

/* a % b = a - floor(a / b) * b: da = dy, db = -floor(a / b) * dy */
static void rule_rem(Ad *a, const Op *op, int dy, int *dx) {
  give(a, dx, 0, dy);
  if (!a->need[1]) return;
  int q = b_un(a, OP_FLOOR, b_bin(a, OP_DIV, op->in[0], op->in[1]));
  give(a, dx, 1, b_bin(a, OP_MUL, dy, b_un(a, OP_NEG, q)));
}

/* An op of kind k with op's attributes (axis; a patch's kernel, stride and padding) and the
 * shape and dtype of `like`. */
static int b_axis_op(Ad *a, OpKind k, int nin, const int *in, int like, const Op *op) {
  Op *r = ad_op(a, k, nin, in, shp(a, like), dty(a, like));
  r->axis = op->axis;
  r->axis2 = op->axis2, r->begin = op->begin, r->end = op->end;
  return r->id;
}

/* cumsum's gradient is the reverse cumulative sum of dy, and the other way round. */
static void rule_cumsum(Ad *a, const Op *op, int dy, int *dx) {
  dx[0] = b_axis_op(a, op->kind == OP_CUMSUM ? OP_CUMSUM_REV : OP_CUMSUM, 1, &dy, dy, op);
}

/* gather(x, idx): dy summed into x's places (GATHER_GRAD), and that is linear in dy with
 * gather as its transpose. */
static void rule_gather(Ad *a, const Op *op, int dy, int *dx) {
  int in[2] = {op->in[1], dy};
  dx[0] = b_axis_op(a, OP_GATHER_GRAD, 2, in, op->in[0], op);
}
static void rule_gather_grad(Ad *a, const Op *op, int dy, int *dx) {
  int in[2] = {dy, op->in[0]};
  dx[1] = b_axis_op(a, OP_GATHER, 2, in, op->in[1], op);
}

/* im2col and col2im are each other's transposes (the patches summed back, or cut again). */
static void rule_im2col(Ad *a, const Op *op, int dy, int *dx) {
  dx[0] = b_axis_op(a, op->kind == OP_IM2COL ? OP_COL2IM : OP_IM2COL, 1, &dy, op->in[0], op);
}

/* ---- fused attention (issue 14, item 2) ---------------------------------------------------------- */

/* sdpa: one SDPA_GRAD (flash attention's backward, recomputing the probabilities from the
 * forward's log-sum-exp, its RESULT 1) makes dq, and its RESULTs 1 and 2 dk and dv. */
static void rule_sdpa(Ad *a, const Op *op, int dy, int *dx) {
  int lse = graph_result(a->g, op->id, 1);
  if (lse < 0) die("autodiff: sdpa %%%d has no log-sum-exp", op->id);
  int in[6] = {op->in[0], op->in[1], op->in[2], op->id, lse, dy};
  Op *g = ad_op(a, OP_SDPA_GRAD, 6, in, shp(a, op->in[0]), dty(a, op->in[0])); /* dq, dk, dv: q's, k's, v's types */
  g->value = op->value;
  g->causal = op->causal;
  dx[0] = g->id;
  for (int r = 1; r <= 2; r++) {
    int gid = g->id;
    Op *res = ad_op(a, OP_RESULT, 1, &gid, shp(a, op->in[r]), dty(a, op->in[r]));
    res->axis = r;
    dx[r] = res->id;
  }
}

/* ---- fused cross-entropy (issue 14, item 3; ce_fuse.c) ------------------------------------------ */

/* CE_FUSED: its forward step also computed the loss's gradient for dloss = 1 (RESULT 1: dx1,
 * RESULT 2: dw1; g is linear in dloss), so the gradient is those times dloss: two MULs, dx's in
 * the input-gradient pass and dw's, read only by the parameter's gradient, in the weight
 * pass (ad_phases), as a product's dw would be. */
static void rule_ce_fused(Ad *a, const Op *op, int dy, int *dx) {
  for (int r = 0; r < 2; r++) {
    int v = graph_result(a->g, op->id, r + 1);
    if (v < 0) die("autodiff: ce_fused %%%d has no result %d", op->id, r + 1);
    if (a->need[r]) dx[r] = b_bin(a, OP_MUL, v, dy);
  }
}

/* ---- the rule table ------------------------------------------------------------------------- */

/* slots: bit j set when input j can carry gradient (SLOTS_ALL: every input, CONCAT's too). */
typedef struct AdRule {
  AdRuleFn *fn;
  unsigned slots;
} AdRule;

#define SLOTS_ALL (~0u)
static const AdRule ad_rules[OP__COUNT] = {
    [OP_NEG] = {rule_neg, SLOTS_ALL},         [OP_EXP] = {rule_exp, SLOTS_ALL},
    [OP_LOG] = {rule_log, SLOTS_ALL},         [OP_SQRT] = {rule_sqrt, SLOTS_ALL},
    [OP_RSQRT] = {rule_rsqrt, SLOTS_ALL},     [OP_TANH] = {rule_tanh, SLOTS_ALL},
    [OP_SIGMOID] = {rule_sigmoid, SLOTS_ALL}, [OP_RELU] = {rule_relu, SLOTS_ALL},
    [OP_GELU] = {rule_gelu, SLOTS_ALL},       [OP_ABS] = {rule_abs, SLOTS_ALL},
    [OP_FLOOR] = {rule_floor, SLOTS_ALL},
    [OP_POW] = {rule_pow, SLOTS_ALL},         [OP_CAST] = {rule_cast, SLOTS_ALL},
    [OP_ADD] = {rule_add, SLOTS_ALL},         [OP_SUB] = {rule_sub, SLOTS_ALL},
    [OP_MUL] = {rule_mul, SLOTS_ALL},         [OP_DIV] = {rule_div, SLOTS_ALL},
    [OP_MAXIMUM] = {rule_minmax, SLOTS_ALL},  [OP_MINIMUM] = {rule_minmax, SLOTS_ALL},
    [OP_GELU_GRAD] = {rule_gelu_grad, SLOTS_ALL},
    [OP_RELU_GRAD] = {rule_relu_grad, 1u << 1},
    [OP_WHERE] = {rule_where, 1u << 1 | 1u << 2},
    [OP_SUM] = {rule_sum, SLOTS_ALL},         [OP_MEAN] = {rule_mean, SLOTS_ALL},
    [OP_AMAX] = {rule_amax, SLOTS_ALL},       [OP_SOFTMAX] = {rule_softmax, SLOTS_ALL},
    [OP_LOG_SOFTMAX] = {rule_log_softmax, SLOTS_ALL},
    [OP_RESHAPE] = {rule_reshape, SLOTS_ALL}, [OP_TRANSPOSE] = {rule_transpose, SLOTS_ALL},
    [OP_SLICE] = {rule_slice, SLOTS_ALL},     [OP_PAD] = {rule_pad, SLOTS_ALL},
    [OP_CONCAT] = {rule_concat, SLOTS_ALL},   [OP_EXPAND] = {rule_expand, SLOTS_ALL},
    [OP_SUM_TO] = {rule_sum_to, SLOTS_ALL},   [OP_MATMUL] = {rule_matmul, SLOTS_ALL},
    [OP_EMBEDDING] = {rule_embedding, 1u << 1},
    [OP_EMBEDDING_GRAD] = {rule_embedding_grad, 1u << 1},
    [OP_CROSS_ENTROPY] = {rule_cross_entropy, 1u << 0},
    [OP_DROPOUT] = {rule_dropout, SLOTS_ALL},
    [OP_TP_ENTER] = {rule_tp_enter, SLOTS_ALL}, [OP_ALLREDUCE] = {rule_allreduce, SLOTS_ALL},
    [OP_ALLGATHER] = {rule_allgather, SLOTS_ALL}, [OP_TP_SLICE] = {rule_tp_slice, SLOTS_ALL},
    [OP_REDUCE_SCATTER] = {rule_reduce_scatter, SLOTS_ALL},
    /* v2 ops with kernels of their own (issue 13, item 1); FLOOR, ARGMAX, TOPK, ONE_HOT and
       CHECK have none (integer results, or flat) */
    [OP_SIN] = {rule_sin, SLOTS_ALL},         [OP_COS] = {rule_cos, SLOTS_ALL},
    [OP_SILU] = {rule_silu, SLOTS_ALL},       [OP_REM] = {rule_rem, SLOTS_ALL},
    [OP_CUMSUM] = {rule_cumsum, SLOTS_ALL},   [OP_CUMSUM_REV] = {rule_cumsum, SLOTS_ALL},
    [OP_GATHER] = {rule_gather, 1u << 0},     [OP_GATHER_GRAD] = {rule_gather_grad, 1u << 1},
    [OP_IM2COL] = {rule_im2col, SLOTS_ALL},   [OP_COL2IM] = {rule_im2col, SLOTS_ALL},
    [OP_SDPA] = {rule_sdpa, SLOTS_ALL}, /* issue 14; its RESULT (the lse) is never differentiated */
    [OP_CE_FUSED] = {rule_ce_fused, 3u}, /* x and w; its RESULTs (dx1, dw1) are never differentiated */
    /* no gradient: leaves, creation, SIGN, NOT, comparisons, AND, OR, CE_GRAD,
       PARAM_GRAD; communication ops come after autodiff. */
};

static bool is_float(DType t) { return t == DT_F32 || t == DT_BF16 || t == DT_F16; }

/* Does input slot j of op carry gradient (given both ends are float)? */
static bool slot_diff(const Graph *g, const Op *op, int j) {
  unsigned m = ad_rules[op->kind].slots;
  bool bit = j >= 32 ? m == SLOTS_ALL : (m >> j) & 1u;
  return bit && is_float(op->dtype) && is_float(g->ops[op->in[j]]->dtype);
}

/* ---- analysis: which values and edges carry gradient ------------------------------------- */

static bool is_source(const Ad *a, const Op *op) {
  if (a->src) return a->src[op->id] && is_float(op->dtype);
  return op->kind == OP_PARAM && is_float(op->dtype);
}

/* from_src forward, then active backward from the loss; ids are topological. */
static void ad_analyse(Ad *a) {
  Graph *g = a->g;
  for (int i = 0; i < a->nfwd; i++) {
    const Op *op = g->ops[i];
    a->from_src[i] = is_source(a, op);
    a->activation[i] = op->kind == OP_INPUT || op->kind == OP_RECV;
    for (int j = 0; j < op->nin; j++) {
      a->from_src[i] |= a->from_src[op->in[j]] && slot_diff(g, op, j);
      a->activation[i] |= a->activation[op->in[j]];
    }
  }
  a->active[g->loss] = a->from_src[g->loss];
  for (int i = g->loss; i >= 0; i--) {
    const Op *op = g->ops[i];
    if (!a->active[i]) continue;
    for (int j = 0; j < op->nin; j++)
      if (a->from_src[op->in[j]] && slot_diff(g, op, j)) a->active[op->in[j]] = true;
  }
}

static bool edge_active(const Ad *a, const Op *op, int j) {
  return a->active[op->id] && a->from_src[op->in[j]] && slot_diff(a->g, op, j);
}

/* Numbers the active uses of each PARAM in (consumer id, slot) order; sizes the contribution lists. */
static void ad_number_uses(Ad *a) {
  Graph *g = a->g;
  int *nuses = arena_alloc(g->arena, sizeof(int) * (size_t)a->nfwd);
  for (int i = 0; i < a->nfwd; i++) {
    const Op *op = g->ops[i];
    a->use[i] = arena_alloc(g->arena, sizeof(int) * (size_t)(op->nin ? op->nin : 1));
    for (int j = 0; j < op->nin; j++) {
      a->use[i][j] = -1;
      if (!edge_active(a, op, j)) continue;
      int p = op->in[j];
      if (g->ops[p]->kind == OP_PARAM) a->use[i][j] = nuses[p];
      nuses[p]++;
    }
  }
  for (int i = 0; i < a->nfwd; i++)
    a->contrib[i] = arena_alloc(g->arena, sizeof(Contrib) * (size_t)(nuses[i] ? nuses[i] : 1));
}

/* ---- the backward sweep -------------------------------------------------------------------- */

static int contrib_cmp(const void *x, const void *y) {
  const Contrib *p = x, *q = y;
  if (p->consumer != q->consumer) return p->consumer < q->consumer ? -1 : 1;
  return (p->slot > q->slot) - (p->slot < q->slot);
}

/* The total gradient of value i: its contributions summed in (consumer, slot) order. */
static int ad_total(Ad *a, int i) {
  Contrib *c = a->contrib[i];
  int n = a->ncontrib[i];
  if (n == 0) die("autodiff: active %%%d has no gradient", i);
  qsort(c, (size_t)n, sizeof *c, contrib_cmp);
  int sum = c[0].grad;
  for (int k = 1; k < n; k++) {
    int st_sum = a->g->ops[sum]->stage, st_c = a->g->ops[c[k].grad]->stage;
    sum = b_bin(a, OP_ADD, sum, c[k].grad);
    /* terms made on later stages are summed on the earliest of them (not before the value's
       own stage): one transfer back, not one each. A residual h + f(h) whose f is on the
       next stage sends its gradient there once, where f's term joins it, and the sum goes
       on; summed at h's stage, the later stage's term went past the next one to it. */
    int st = st_sum < st_c ? st_sum : st_c, own = a->cur->stage;
    if (st_sum >= 0 && st_c >= 0 && st >= own) a->g->ops[sum]->stage = st;
  }
  return sum;
}

/* The loss's gradient: 1 / (microbatches * dp). */
static int ad_seed(Ad *a) {
  int64_t mb = a->g->train.microbatches > 0 ? a->g->train.microbatches : 1;
  int64_t dp = a->g->mesh.dp;
  Op *op = ad_op(a, OP_FULL, 0, NULL, &a->cur->shape, a->cur->dtype);
  op->value = 1.0 / (double)(mb * dp);
  return op->id;
}

/* Hands the input gradients of op to its inputs: a PARAM_GRAD sink per param use. */
static void ad_distribute(Ad *a, const Op *op, const int *dx) {
  for (int j = 0; j < op->nin; j++) {
    if (!a->need[j]) continue;
    if (dx[j] < 0) die("autodiff: rule for %s gave no gradient to input %d", op_name(op->kind), j);
    const Op *in = a->g->ops[op->in[j]];
    if (!shape_eq(shp(a, dx[j]), &in->shape)) die("autodiff: %%%d: gradient of input %d has the wrong shape", op->id, j);
    if (in->kind == OP_PARAM && a->use[op->id][j] >= 0) {
      Op *s = ad_op(a, OP_PARAM_GRAD, 1, &dx[j], &in->shape, in->dtype);
      s->key = in->id;
      s->use = a->use[op->id][j];
      continue;
    }
    a->contrib[in->id][a->ncontrib[in->id]++] = (Contrib){op->id, j, dx[j]};
  }
}

/* Runs op's rule with its gradient dy. */
static void ad_op_backward(Ad *a, const Op *op, int dy) {
  const AdRule *r = &ad_rules[op->kind];
  if (!r->fn) die("autodiff: no rule for %%%d %s", op->id, op_name(op->kind));
  bool *need = arena_alloc(a->g->arena, sizeof(bool) * (size_t)op->nin);
  int *dx = arena_alloc(a->g->arena, sizeof(int) * (size_t)op->nin);
  for (int j = 0; j < op->nin; j++) {
    need[j] = edge_active(a, op, j);
    dx[j] = -1;
  }
  a->need = need;
  r->fn(a, op, dy, dx);
  ad_distribute(a, op, dx);
}

static void ad_add_b_root(Ad *a, int id) {
  if (a->nb_roots == a->cap_b_roots) {
    a->cap_b_roots = a->cap_b_roots ? 2 * a->cap_b_roots : 64;
    a->b_roots = realloc(a->b_roots, sizeof(int) * (size_t)a->cap_b_roots);
    if (!a->b_roots) die("autodiff: out of memory");
  }
  a->b_roots[a->nb_roots++] = id;
}

/*
 * Phase of every backward op: BWD_B for the gradients of activations and all that
 * feeds one (or that has no consumer at all), BWD_W for the rest, which feed
 * PARAM_GRAD sinks only. Consumers have larger ids, so one descending sweep does.
 */
static void ad_phases(Ad *a) {
  Graph *g = a->g;
  int nfwd = a->nfwd, n = g->nops - nfwd;
  bool *feeds_b = calloc((size_t)(n ? n : 1), 1), *used = calloc((size_t)(n ? n : 1), 1);
  if (!feeds_b || !used) die("autodiff: out of memory");
  for (int k = 0; k < a->nb_roots; k++) {
    if (a->b_roots[k] < nfwd) die("autodiff: a forward op %%%d used as a gradient", a->b_roots[k]);
    feeds_b[a->b_roots[k] - nfwd] = true;
  }
  for (int i = g->nops - 1; i >= nfwd; i--) {
    Op *op = g->ops[i];
    bool b = op->kind != OP_PARAM_GRAD && (feeds_b[i - nfwd] || !used[i - nfwd]);
    op->phase = b ? PH_BWD_B : PH_BWD_W;
    for (int j = 0; j < op->nin; j++)
      if (op->in[j] >= nfwd) {
        used[op->in[j] - nfwd] = true;
        /* a RESULT in BWD_B puts its op there; a gradient read on another stage travels
           with the input gradients, so it is made in BWD_B (a weight-like value sent to a
           later stage: its gradient stopped the partition under zb and zbv) */
        feeds_b[op->in[j] - nfwd] |= b || g->ops[op->in[j]]->stage != op->stage;
      }
  }
  /* one step writes an op's results: each RESULT runs in its op's pass (BWD_B when any is) */
  for (int i = nfwd; i < g->nops; i++)
    if (g->ops[i]->kind == OP_RESULT) g->ops[i]->phase = g->ops[g->ops[i]->in[0]]->phase;
  free(feeds_b);
  free(used);
}

/* The loss must be a float scalar; reports to d otherwise. */
static int ad_check_loss(Graph *g, Diag *d) {
  if (g->loss < 0) {
    diag_error_noloc(d, "model %s returns no loss", g->model_name ? g->model_name : "?");
    return 1;
  }
  const Op *l = g->ops[g->loss];
  if (shape_numel(&l->shape) != 1 || !is_float(l->dtype)) {
    char buf[96];
    diag_error(d, l->loc, "the loss must be a float scalar, not %s%s", dtype_name(l->dtype), shape_str(&l->shape, buf, sizeof buf));
    return 1;
  }
  return 0;
}

/* The training backward: a float param the loss does not depend on gets no gradient,
 * which a PyTorch user meets as an error (backward of a loss that requires no grad) or a
 * param whose .grad stays None; here the step runs, so say which (once per param). */
static void warn_unreached(const Ad *a, Diag *d) {
  const Graph *g = a->g;
  int nparams = 0, reached = 0;
  for (int i = 0; i < a->nfwd; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_PARAM || !is_float(op->dtype)) continue;
    nparams++;
    if (a->active[i]) {
      reached++;
      continue;
    }
    diag_warning(d, op->loc, "param '%s' does not reach the loss: it gets no gradient, and the optimizer "
                 "leaves it as it is (as PyTorch's does a param whose .grad is None)", op->name ? op->name : "?");
  }
  if (reached == 0)
    diag_warning(d, g->ops[g->loss]->loc, "the loss depends on no param%s: training changes nothing",
                 nparams ? "" : " (the model has none)");
}

int ad_backward_ex(Graph *g, Diag *d, const bool *wrt, int *grad_of) {
  int nfwd = g->nops;
  for (int i = 0; grad_of && i < nfwd; i++) grad_of[i] = -1;
  if (ad_check_loss(g, d)) return 1;
  Arena *ar = g->arena;
  Ad a = {.g = g, .nfwd = nfwd, .src = wrt};
  a.from_src = arena_alloc(ar, sizeof(bool) * (size_t)nfwd);
  a.active = arena_alloc(ar, sizeof(bool) * (size_t)nfwd);
  a.activation = arena_alloc(ar, sizeof(bool) * (size_t)nfwd);
  a.use = arena_alloc(ar, sizeof(int *) * (size_t)nfwd);
  a.contrib = arena_alloc(ar, sizeof(Contrib *) * (size_t)nfwd);
  a.ncontrib = arena_alloc(ar, sizeof(int) * (size_t)nfwd);
  ad_analyse(&a);
  if (!wrt) warn_unreached(&a, d);
  ad_number_uses(&a);
  for (int i = g->loss; i >= 0; i--) {
    const Op *op = g->ops[i];
    if (!a.active[i] || op->kind == OP_PARAM) continue;
    a.cur = op;
    int dy = i == g->loss ? ad_seed(&a) : ad_total(&a, i);
    if (grad_of) grad_of[i] = dy;
    if (a.activation[i]) ad_add_b_root(&a, dy);
    if (op->nin > 0) ad_op_backward(&a, op, dy);
  }
  ad_phases(&a);
  free(a.b_roots);
  graph_verify(g);
  return 0;
}

int ad_backward(Graph *g, Diag *d) { return ad_backward_ex(g, d, NULL, NULL); }

void ad_dump(FILE *out, const Graph *g) {
  int nb = 0, nw = 0, nsink = 0;
  for (int i = 0; i < g->nops; i++) {
    nb += g->ops[i]->phase == PH_BWD_B;
    nw += g->ops[i]->phase == PH_BWD_W;
    nsink += g->ops[i]->kind == OP_PARAM_GRAD;
  }
  fprintf(out, "# grad: %d ops, %d forward, %d bwd_b, %d bwd_w, %d param_grad sinks\n", g->nops,
          g->nops - nb - nw, nb, nw, nsink);
  graph_dump(out, g);
}
