/*
 * refeval.c — the reference evaluator: runs any graph IR in plain C, float64.
 *
 * It is the oracle for autodiff (finite differences), the generated kernels and
 * the runtime, so it is written to be obviously correct, not fast: every op is a
 * loop over output (or input) elements with multi-indices, sums run in index
 * order, nothing is fused.
 *
 * Invariants: vals[id] holds numel(op->shape) doubles, row-major, for every op
 * but SEND (NULL); i32 and bool values are stored as doubles (0/1 for bool);
 * leaves (INPUT, PARAM, RECV) belong to the caller and are never written.
 */
#include "autodiff.h"
#include "../runtime/mpl_rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- shapes and indices ------------------------------------------------- */

static void unravel(const Shape *s, int64_t lin, int64_t *ix) {
  for (int i = s->rank - 1; i >= 0; i--) {
    ix[i] = lin % s->d[i];
    lin /= s->d[i];
  }
}

static int64_t ravel(const Shape *s, const int64_t *ix) {
  int64_t lin = 0;
  for (int i = 0; i < s->rank; i++) lin = lin * s->d[i] + ix[i];
  return lin;
}

/* Offset in a value of shape in, broadcast NumPy-style to out, at out's index ix. */
static int64_t bcast_off(const Shape *in, const Shape *out, const int64_t *ix) {
  int64_t lin = 0;
  for (int i = 0; i < in->rank; i++) {
    int oi = out->rank - in->rank + i;
    lin = lin * in->d[i] + (in->d[i] == 1 ? 0 : ix[oi]);
  }
  return lin;
}

/* Normalises a possibly negative axis; dies when out of range. */
static int norm_axis(int axis, int rank) {
  int a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) die("refeval: axis %d out of range for rank %d", axis, rank);
  return a;
}

/* A shape split around one axis: [outer..., n, inner...]; AXIS_ALL is [1, numel, 1]. */
typedef struct Split3 {
  int64_t outer, n, inner;
} Split3;

static Split3 split_axis(const Shape *s, int axis) {
  if (axis == AXIS_ALL) return (Split3){1, shape_numel(s), 1};
  int a = norm_axis(axis, s->rank);
  Split3 r = {1, s->d[a], 1};
  for (int i = 0; i < a; i++) r.outer *= s->d[i];
  for (int i = a + 1; i < s->rank; i++) r.inner *= s->d[i];
  return r;
}

static double *alloc_vals(int64_t n) {
  double *p = calloc((size_t)(n ? n : 1), sizeof(double));
  if (!p) die("refeval: out of memory (%lld doubles)", (long long)n);
  return p;
}

static const Shape *in_shape(const Graph *g, const Op *op, int j) { return &g->ops[op->in[j]]->shape; }

/* ---- elementwise ---------------------------------------------------------- */

static const double GELU_K = 0.7978845608028654; /* sqrt(2/pi) */
static const double GELU_C = 0.044715;

static double gelu(double x) { return 0.5 * x * (1.0 + tanh(GELU_K * (x + GELU_C * x * x * x))); }

static double gelu_grad(double x) {
  double t = tanh(GELU_K * (x + GELU_C * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * x * x);
}

/* An integer result as the kernels' i32 holds it: its low 32 bits (they wrap by design). */
static double wrap_i32(int64_t v) { return (double)(int32_t)(uint32_t)(uint64_t)v; }

/* A run-time cast to i32 truncates toward zero, saturates past the range, gives 0 for NaN
 * (the kernels' saturating convert). */
static double cast_to(DType t, double x) {
  if (t == DT_I32) return isnan(x) ? 0.0 : x >= 2147483647.0 ? 2147483647.0 : x <= -2147483648.0 ? -2147483648.0 : trunc(x);
  if (t == DT_BOOL) return x != 0.0;
  return x;
}

static double ew_unary(const Op *op, double x) {
  switch (op->kind) {
  case OP_NEG: return -x;
  case OP_EXP: return exp(x);
  case OP_LOG: return log(x);
  case OP_SQRT: return sqrt(x);
  case OP_RSQRT: return 1.0 / sqrt(x);
  case OP_TANH: return tanh(x);
  case OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
  case OP_RELU: return isnan(x) || x > 0 ? x : 0.0; /* NaN stays NaN, as max(x, 0) and PyTorch */
  case OP_GELU: return gelu(x);
  case OP_ABS: return fabs(x);
  case OP_SIGN: return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
  case OP_POW: /* x^0.5 is sqrt(x), as in the kernels (fuse_emit.c) and PyTorch: NaN at -inf, where C's pow gives +inf */
    return op->value == 0.5 ? sqrt(x) : pow(x, op->value);
  case OP_CAST: return cast_to(op->dtype, x);
  case OP_NOT: return x == 0.0;
  case OP_SIN: return sin(x);
  case OP_COS: return cos(x);
  case OP_FLOOR: return floor(x);
  case OP_SILU: return x / (1.0 + exp(-x));
  case OP_ROUND_BF16: return dtype_round_bf16(x);
  case OP_ROUND_F16: return dtype_round_f16(x);
  default: die("refeval: %s is not unary elementwise", op_name(op->kind));
  }
}

/* torch.remainder: the sign of b; an i32 x % 0 is 0, as the kernels make it (CHECK reports it). */
static double torch_remainder(DType t, double a, double b) {
  if (t == DT_I32 && b == 0) return 0.0;
  double r = fmod(a, b);
  return r != 0 && (b < 0) != (r < 0) ? r + b : r;
}

static double ew_binary(const Op *op, double a, double b) {
  switch (op->kind) {
  case OP_REM: return torch_remainder(op->dtype, a, b);
  case OP_ADD: return a + b;
  case OP_SUB: return a - b;
  case OP_MUL: return op->dtype == DT_I32 ? wrap_i32((int64_t)a * (int64_t)b) : a * b; /* exact in 64 bits */
  case OP_DIV: return op->dtype != DT_I32 ? a / b : b == 0 ? 0.0 : trunc(a / b); /* i32: toward zero, x / 0 = 0 as the kernels */
  case OP_MAXIMUM: return isnan(a) || a > b ? a : b;
  case OP_MINIMUM: return isnan(a) || a < b ? a : b;
  case OP_EQ: return a == b;
  case OP_NE: return a != b;
  case OP_LT: return a < b;
  case OP_LE: return a <= b;
  case OP_GT: return a > b;
  case OP_GE: return a >= b;
  case OP_AND: return a != 0.0 && b != 0.0;
  case OP_OR: return a != 0.0 || b != 0.0;
  case OP_GELU_GRAD: return b * gelu_grad(a);
  case OP_RELU_GRAD: return a <= 0 ? 0.0 : b; /* a nan passes b, as PyTorch */
  default: die("refeval: %s is not binary elementwise", op_name(op->kind));
  }
}

/* Any elementwise op: inputs broadcast to op->shape, one scalar function per element. */
static double *ev_elementwise(const Graph *g, const Op *op, double **v) {
  int64_t n = shape_numel(&op->shape), ix[MPL_MAX_RANK];
  double *out = alloc_vals(n), x[3];
  if (op->nin < 1 || op->nin > 3) die("refeval: %s with %d inputs", op_name(op->kind), op->nin);
  for (int64_t i = 0; i < n; i++) {
    unravel(&op->shape, i, ix);
    for (int j = 0; j < op->nin; j++) x[j] = v[op->in[j]][bcast_off(in_shape(g, op, j), &op->shape, ix)];
    if (op->kind == OP_WHERE) out[i] = x[0] != 0.0 ? x[1] : x[2];
    else if (op->nin == 1) out[i] = ew_unary(op, x[0]);
    else out[i] = ew_binary(op, x[0], x[1]);
    if (op->dtype == DT_I32) out[i] = wrap_i32((int64_t)out[i]); /* -INT_MIN, INT_MIN / -1, sums past 2^31 */
  }
  return out;
}

/* ---- creation --------------------------------------------------------------- */

static double *ev_creation(const Op *op) {
  int64_t n = shape_numel(&op->shape);
  double *out = alloc_vals(n);
  for (int64_t i = 0; i < n; i++) {
    if (op->kind == OP_FULL) out[i] = op->value;
    else if (op->kind == OP_ARANGE) out[i] = (double)i;
    else out[i] = i / op->shape.d[1] >= i % op->shape.d[1]; /* CAUSAL_MASK: row >= col */
  }
  if (op->kind == OP_CAUSAL_MASK && op->shape.rank != 2) die("refeval: causal_mask of rank %d", op->shape.rank);
  return out;
}

/* ---- reductions ------------------------------------------------------------- */

static double *ev_reduce(const Graph *g, const Op *op, double **v) {
  const double *x = v[op->in[0]];
  Split3 s = split_axis(in_shape(g, op, 0), op->axis);
  if (s.outer * s.inner != shape_numel(&op->shape)) die("refeval: %%%d: reduction shape mismatch", op->id);
  double *out = alloc_vals(s.outer * s.inner);
  for (int64_t o = 0; o < s.outer; o++)
    for (int64_t i = 0; i < s.inner; i++) {
      double acc = op->kind == OP_AMAX ? -INFINITY : 0.0;
      for (int64_t p = 0; p < s.n; p++) {
        double e = x[(o * s.n + p) * s.inner + i];
        if (op->kind == OP_AMAX) acc = (e > acc || isnan(e)) ? e : acc;
        else acc += e;
      }
      out[o * s.inner + i] = op->kind == OP_MEAN ? acc / (double)s.n : op->dtype == DT_I32 ? wrap_i32((int64_t)acc) : acc;
    }
  return out;
}

/* softmax / log_softmax over op->axis, max-subtracted. */
static double *ev_softmax(const Op *op, double **v) {
  const double *x = v[op->in[0]];
  Split3 s = split_axis(&op->shape, op->axis);
  double *out = alloc_vals(shape_numel(&op->shape));
  for (int64_t o = 0; o < s.outer; o++)
    for (int64_t i = 0; i < s.inner; i++) {
      double mx = -INFINITY, sum = 0.0;
      for (int64_t p = 0; p < s.n; p++) mx = fmax(mx, x[(o * s.n + p) * s.inner + i]);
      for (int64_t p = 0; p < s.n; p++) sum += exp(x[(o * s.n + p) * s.inner + i] - mx);
      for (int64_t p = 0; p < s.n; p++) {
        int64_t k = (o * s.n + p) * s.inner + i;
        out[k] = op->kind == OP_SOFTMAX ? exp(x[k] - mx) / sum : x[k] - mx - log(sum);
      }
    }
  return out;
}

/* ---- shape ops -------------------------------------------------------------- */

static double *ev_copy(const Graph *g, const Op *op, double **v) {
  int64_t n = shape_numel(&op->shape);
  if (shape_numel(in_shape(g, op, 0)) != n) die("refeval: %%%d %s changes the element count", op->id, op_name(op->kind));
  double *out = alloc_vals(n);
  memcpy(out, v[op->in[0]], sizeof(double) * (size_t)n);
  return out;
}

/* TRANSPOSE, SLICE and EXPAND: each output element reads one input element. */
static double *ev_gather(const Graph *g, const Op *op, double **v) {
  const Shape *is = in_shape(g, op, 0);
  int64_t n = shape_numel(&op->shape), ix[MPL_MAX_RANK];
  double *out = alloc_vals(n);
  int a = op->kind == OP_EXPAND ? 0 : norm_axis(op->axis, op->shape.rank);
  for (int64_t i = 0; i < n; i++) {
    unravel(&op->shape, i, ix);
    if (op->kind == OP_EXPAND) {
      out[i] = v[op->in[0]][bcast_off(is, &op->shape, ix)];
      continue;
    }
    if (op->kind == OP_TRANSPOSE) {
      int b = norm_axis(op->axis2, op->shape.rank);
      int64_t t = ix[a];
      ix[a] = ix[b];
      ix[b] = t;
    } else {
      ix[a] += op->begin; /* SLICE */
    }
    out[i] = v[op->in[0]][ravel(is, ix)];
  }
  return out;
}

/* PAD and CONCAT: each input element is written to one output place; the rest is 0. */
static double *ev_scatter(const Graph *g, const Op *op, double **v) {
  double *out = alloc_vals(shape_numel(&op->shape));
  int a = norm_axis(op->axis, op->shape.rank);
  int64_t off = op->kind == OP_PAD ? op->begin : 0, ix[MPL_MAX_RANK];
  for (int j = 0; j < op->nin; j++) {
    const Shape *is = in_shape(g, op, j);
    for (int64_t i = 0, n = shape_numel(is); i < n; i++) {
      unravel(is, i, ix);
      ix[a] += off;
      out[ravel(&op->shape, ix)] = v[op->in[j]][i];
    }
    off += is->d[a];
  }
  return out;
}

/* SUM_TO: NumPy's reverse of broadcasting, summed in input element order. */
static double *ev_sum_to(const Graph *g, const Op *op, double **v) {
  const Shape *is = in_shape(g, op, 0), *os = &op->shape;
  if (os->rank > is->rank) die("refeval: %%%d sum_to to a higher rank", op->id);
  double *out = alloc_vals(shape_numel(os));
  int64_t ix[MPL_MAX_RANK], ox[MPL_MAX_RANK];
  for (int64_t i = 0, n = shape_numel(is); i < n; i++) {
    unravel(is, i, ix);
    for (int j = 0; j < os->rank; j++) ox[j] = os->d[j] == 1 ? 0 : ix[is->rank - os->rank + j];
    out[ravel(os, ox)] += v[op->in[0]][i];
  }
  return out;
}

/* ---- matmul ----------------------------------------------------------------- */

/* A matmul operand seen as [batch..., rows, cols] (a rank-1 operand as one row or column). */
static Shape mm_view(const Shape *s, bool is_b) {
  if (s->rank >= 2) return *s;
  if (s->rank != 1) die("refeval: matmul of a rank-%d operand", s->rank);
  return is_b ? (Shape){2, {s->d[0], 1}} : (Shape){2, {1, s->d[0]}};
}

static Shape mm_batch(const Shape *s) {
  Shape b = {.rank = s->rank - 2};
  for (int i = 0; i < b.rank; i++) b.d[i] = s->d[i];
  return b;
}

static double *ev_matmul(const Graph *g, const Op *op, double **v) {
  Shape as = mm_view(in_shape(g, op, 0), false), bs = mm_view(in_shape(g, op, 1), true);
  Shape ab = mm_batch(&as), bb = mm_batch(&bs), ob;
  int ra = as.rank, rb = bs.rank;
  int64_t m = op->ta ? as.d[ra - 1] : as.d[ra - 2], k = op->ta ? as.d[ra - 2] : as.d[ra - 1];
  int64_t kb = op->tb ? bs.d[rb - 1] : bs.d[rb - 2], n = op->tb ? bs.d[rb - 2] : bs.d[rb - 1];
  if (k != kb || !shape_broadcast(&ab, &bb, &ob)) die("refeval: %%%d matmul shapes do not match", op->id);
  int64_t nb = shape_numel(&ob), ix[MPL_MAX_RANK];
  if (nb * m * n != shape_numel(&op->shape)) die("refeval: %%%d matmul output shape", op->id);
  const double *A = v[op->in[0]], *B = v[op->in[1]];
  double *out = alloc_vals(nb * m * n);
  for (int64_t b = 0; b < nb; b++) {
    unravel(&ob, b, ix);
    const double *a0 = A + bcast_off(&ab, &ob, ix) * m * k, *b0 = B + bcast_off(&bb, &ob, ix) * k * n;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double acc = 0.0;
        for (int64_t p = 0; p < k; p++)
          acc += (op->ta ? a0[p * m + i] : a0[i * k + p]) * (op->tb ? b0[j * k + p] : b0[p * n + j]);
        out[(b * m + i) * n + j] = acc;
      }
  }
  return out;
}

/* ---- neural ------------------------------------------------------------------- */

static int64_t row_index(double x, int64_t rows, const Op *op) {
  if (!(x >= 0 && x < (double)rows)) die("refeval: %%%d %s: index %g out of [0, %lld)", op->id, op_name(op->kind), x, (long long)rows);
  return (int64_t)x;
}

/* EMBEDDING(idx, weight) gathers rows; EMBEDDING_GRAD(idx, dy) scatter-adds them in position order. */
static double *ev_embedding(const Graph *g, const Op *op, double **v) {
  const Shape *ws = op->kind == OP_EMBEDDING ? in_shape(g, op, 1) : &op->shape;
  if (ws->rank != 2) die("refeval: %%%d embedding table of rank %d", op->id, ws->rank);
  int64_t rows = ws->d[0], cols = ws->d[1], npos = shape_numel(in_shape(g, op, 0));
  const double *idx = v[op->in[0]], *src = v[op->in[1]];
  double *out = alloc_vals(shape_numel(&op->shape));
  for (int64_t p = 0; p < npos; p++) {
    int64_t r = row_index(idx[p], rows, op);
    for (int64_t c = 0; c < cols; c++) {
      if (op->kind == OP_EMBEDDING) out[p * cols + c] = src[r * cols + c];
      else out[r * cols + c] += src[p * cols + c];
    }
  }
  return out;
}

/* CROSS_ENTROPY(logits, targets), CE_ROWS(logits, targets) (the loss of each position)
 * and CE_GRAD(logits, targets, g): classes on the last axis. */
static double *ev_cross_entropy(const Graph *g, const Op *op, double **v) {
  const Shape *ls = in_shape(g, op, 0);
  int64_t c = ls->d[ls->rank - 1], npos = shape_numel(ls) / c;
  const double *x = v[op->in[0]], *t = v[op->in[1]];
  bool grad = op->kind == OP_CE_GRAD, rows = op->kind == OP_CE_ROWS;
  double *out = alloc_vals(grad ? npos * c : rows ? npos : 1), loss = 0.0;
  double scale = grad ? v[op->in[2]][0] / (double)npos : 0.0;
  for (int64_t p = 0; p < npos; p++) {
    const double *row = x + p * c;
    int64_t tgt = row_index(t[p], c, op);
    double mx = -INFINITY, sum = 0.0;
    for (int64_t j = 0; j < c; j++) mx = fmax(mx, row[j]);
    for (int64_t j = 0; j < c; j++) sum += exp(row[j] - mx);
    if (rows) out[p] = mx + log(sum) - row[tgt];
    if (!grad) loss += mx + log(sum) - row[tgt];
    for (int64_t j = 0; grad && j < c; j++) out[p * c + j] = (exp(row[j] - mx) / sum - (j == tgt)) * scale;
  }
  if (!grad && !rows) out[0] = loss / (double)npos;
  return out;
}

static double *ev_dropout(const Op *op, double **v, const RefCtx *ctx) {
  RefCtx zero = {0, 0, 0};
  if (!ctx) ctx = &zero;
  uint64_t stream = mpl_dropout_stream(ctx->seed, ctx->step, op->key);
  int64_t n = shape_numel(&op->shape);
  double *out = alloc_vals(n), scale = 1.0 / (1.0 - op->value);
  const double *x = v[op->in[0]];
  if (ctx->mb < 0) scale = 1.0; /* evaluation: every element kept, unscaled */
  int64_t mb = op->step_mask ? 0 : ctx->mb; /* a step mask: one for every micro-batch */
  for (int64_t i = 0; i < n; i++)
    out[i] = ctx->mb < 0 || mpl_dropout_keep(stream, mpl_dropout_index(mb, n, i), op->value) ? x[i] * scale : 0.0;
  return out;
}

/* ---- v2 ops with kernels of their own (issue 13, item 1) ---------------------------- */

/* The order of argmax and topk: a before b when it is larger, NaN largest, ties to the
 * lower index (ia < ib). */
static bool ranks_before(double a, int64_t ia, double b, int64_t ib) {
  if (isnan(a) || isnan(b)) return isnan(a) && (!isnan(b) || ia < ib);
  return a > b || (a == b && ia < ib);
}

/* ARGMAX (the first best of each row) and TOPK (the k best of each row, best first). */
static double *ev_argmax_topk(const Graph *g, const Op *op, double **v) {
  Split3 s = split_axis(in_shape(g, op, 0), op->axis);
  int64_t k = op->kind == OP_TOPK ? op->shape.d[op->axis] : 1;
  const double *x = v[op->in[0]];
  double *out = alloc_vals(s.outer * k * s.inner);
  bool *taken = calloc((size_t)s.n, 1);
  if (!taken) die("refeval: out of memory");
  for (int64_t o = 0; o < s.outer; o++)
    for (int64_t i = 0; i < s.inner; i++) {
      memset(taken, 0, (size_t)s.n);
      for (int64_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t p = 0; p < s.n; p++)
          if (!taken[p] && (best < 0 || ranks_before(x[(o * s.n + p) * s.inner + i], p,
                                                     x[(o * s.n + best) * s.inner + i], best)))
            best = p;
        taken[best] = true;
        out[(o * k + j) * s.inner + i] = (double)best;
      }
    }
  free(taken);
  return out;
}

/* CUMSUM (prefix sums) and CUMSUM_REV (suffix sums), in index order along the axis. */
static double *ev_cumsum(const Op *op, double **v) {
  Split3 s = split_axis(&op->shape, op->axis);
  const double *x = v[op->in[0]];
  double *out = alloc_vals(shape_numel(&op->shape));
  bool rev = op->kind == OP_CUMSUM_REV;
  for (int64_t o = 0; o < s.outer; o++)
    for (int64_t i = 0; i < s.inner; i++) {
      double acc = 0;
      for (int64_t q = 0; q < s.n; q++) {
        int64_t p = rev ? s.n - 1 - q : q, at = (o * s.n + p) * s.inner + i;
        acc += x[at];
        out[at] = op->dtype == DT_I32 ? wrap_i32((int64_t)acc) : acc;
      }
    }
  return out;
}

/* GATHER(x, idx) reads x at idx's values; GATHER_GRAD(idx, dy) adds dy there, in idx's order. */
static double *ev_gather_op(const Graph *g, const Op *op, double **v) {
  bool grad = op->kind == OP_GATHER_GRAD;
  const Shape *is = in_shape(g, op, grad ? 0 : 1), *xs = grad ? &op->shape : in_shape(g, op, 0);
  const double *idx = v[op->in[grad ? 0 : 1]], *src = v[op->in[grad ? 1 : 0]];
  double *out = alloc_vals(shape_numel(&op->shape));
  int64_t ix[MPL_MAX_RANK];
  for (int64_t p = 0, n = shape_numel(is); p < n; p++) {
    unravel(is, p, ix);
    ix[op->axis] = row_index(idx[p], xs->d[op->axis], op);
    if (grad) out[ravel(xs, ix)] += src[p];
    else out[p] = src[ravel(xs, ix)];
  }
  return out;
}

static double *ev_one_hot(const Op *op, double **v) {
  int64_t n = op->shape.d[op->shape.rank - 1], rows = shape_numel(&op->shape) / n;
  double *out = alloc_vals(rows * n);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < n; c++) out[r * n + c] = v[op->in[0]][r] == (double)c;
  return out;
}

/* IM2COL: patch element (c, ki, kj) of output place (oh, ow) is x[n, c, oh*s - p + ki,
 * ow*s - p + kj], 0 in the padding; COL2IM adds each patch element back there. */
static double *ev_patches(const Graph *g, const Op *op, double **v) {
  bool back = op->kind == OP_COL2IM;
  const Shape *xs = back ? &op->shape : in_shape(g, op, 0);
  int64_t N = xs->d[0], C = xs->d[1], H = xs->d[2], W = xs->d[3], kh = op->axis, kw = op->axis2;
  int64_t st = op->begin, pad = op->end, Ho = (H + 2 * pad - kh) / st + 1, Wo = (W + 2 * pad - kw) / st + 1;
  int64_t K = C * kh * kw, P = Ho * Wo;
  const double *src = v[op->in[0]];
  double *out = alloc_vals(shape_numel(&op->shape));
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++)
      for (int64_t q = 0; q < P; q++) {
        int64_t c = k / (kh * kw), ki = k / kw % kh, kj = k % kw;
        int64_t h = q / Wo * st - pad + ki, w = q % Wo * st - pad + kj;
        if (h < 0 || h >= H || w < 0 || w >= W) continue;
        int64_t xi = ((n * C + c) * H + h) * W + w, ci = (n * K + k) * P + q;
        if (back) out[xi] += src[ci];
        else out[ci] = src[xi];
      }
  return out;
}

/* CHECK: how many elements the op `key` would reject. */
static double *ev_check(const Graph *g, const Op *op, double **v) {
  double *out = alloc_vals(1);
  for (int64_t i = 0, n = shape_numel(in_shape(g, op, 0)); i < n; i++) {
    double x = v[op->in[0]][i];
    out[0] += op->key != OP_REM && op->key != OP_DIV ? !(x >= 0 && x < op->value) : x == 0;
  }
  return out;
}

/* ---- fused attention (issue 14, item 2) ------------------------------------------------
 * SDPA(q, k, v) and its RESULT 1 (lse), SDPA_GRAD(q, k, v, out, lse, dout) and its RESULTs 1
 * and 2 (dk, dv), one query row at a time: the scores s_j = scale * q.k_j over the keys the
 * row sees (j <= i when causal), p = softmax(s), out = p v, lse = max + log(sum); backward
 * D = dout.out, p_j = exp(s_j - lse), ds_j = p_j (dout.v_j - D), dq = scale ds k, dk = scale
 * ds^T q, dv = p^T dout. Under precision = bf16 (q, k, v, out and dout come rounded from
 * precision.c's ops) the forward rounds the unnormalised probabilities exp(s_j - max) before
 * the product with v and divides by the sum of the unrounded ones, as flash attention's tiles
 * do (the kernels' max is the running one, the same unless a row's maximum lies in a later
 * key tile); the backward rounds p and ds before their products, as the kernels do. */

typedef struct SdpaRef {
  int64_t B, H, G, T, S, hs, hv;
  double scale;
  bool causal, bf16;
} SdpaRef;

static SdpaRef sdpa_ref_dims(const Graph *g, const Op *op) {
  const Shape *q = in_shape(g, op, 0), *k = in_shape(g, op, 1), *v = in_shape(g, op, 2);
  int r = q->rank;
  SdpaRef d = {.H = q->d[r - 3], .T = q->d[r - 2], .S = k->d[r - 2], .hs = q->d[r - 1], .hv = v->d[r - 1]};
  d.B = shape_numel(q) / (d.H * d.T * d.hs);
  d.G = d.H / k->d[r - 3];
  d.scale = op->value, d.causal = op->causal, d.bf16 = prec_sdpa_bf16(g, op);
  return d;
}

/* Row i of (b, h): its scores into s[S] (-inf where masked), normalised by lse (the row's own
 * when lse is NaN: the forward) into p[S]; returns the lse. */
static double sdpa_ref_row(const SdpaRef *d, const double *q, const double *k, int64_t b, int64_t h, int64_t i,
                           double lse, double *s, double *p) {
  const double *qi = q + ((b * d->H + h) * d->T + i) * d->hs, *kb = k + (b * (d->H / d->G) + h / d->G) * d->S * d->hs;
  double mx = -INFINITY, sum = 0;
  for (int64_t j = 0; j < d->S; j++) {
    double dot = 0;
    for (int64_t c = 0; c < d->hs; c++) dot += qi[c] * kb[j * d->hs + c];
    s[j] = d->causal && j > i ? -INFINITY : dot * d->scale;
    mx = fmax(mx, s[j]);
  }
  for (int64_t j = 0; j < d->S; j++) sum += exp(s[j] - mx);
  if (isnan(lse)) lse = mx + log(sum);
  for (int64_t j = 0; j < d->S; j++) p[j] = exp(s[j] - lse);
  return lse;
}

/* Result `which` of an SDPA or SDPA_GRAD: every result computed, the others dropped. */
static double *ev_sdpa(const Graph *g, const Op *op, double **v, int which) {
  SdpaRef d = sdpa_ref_dims(g, op);
  int64_t Hkv = d.H / d.G;
  bool grad = op->kind == OP_SDPA_GRAD;
  const double *q = v[op->in[0]], *k = v[op->in[1]], *vv = v[op->in[2]];
  double *res[3];
  res[0] = alloc_vals(d.B * d.H * d.T * (grad ? d.hs : d.hv));
  res[1] = alloc_vals(grad ? d.B * Hkv * d.S * d.hs : d.B * d.H * d.T);
  res[2] = alloc_vals(grad ? d.B * Hkv * d.S * d.hv : 1);
  double *s = alloc_vals(d.S), *p = alloc_vals(d.S), *dp = alloc_vals(d.S);
  for (int64_t b = 0; b < d.B; b++)
    for (int64_t h = 0; h < d.H; h++)
      for (int64_t i = 0; i < d.T; i++) {
        int64_t row = (b * d.H + h) * d.T + i, kv = b * Hkv + h / d.G;
        const double *vb = vv + kv * d.S * d.hv;
        if (!grad) {
          res[1][row] = sdpa_ref_row(&d, q, k, b, h, i, NAN, s, p);
          if (d.bf16) { /* p_j = round(exp(s_j - max)) / sum, the sum of the unrounded terms */
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < d.S; j++) mx = fmax(mx, s[j]);
            for (int64_t j = 0; j < d.S; j++) sum += exp(s[j] - mx);
            for (int64_t j = 0; j < d.S; j++) p[j] = dtype_round_bf16(exp(s[j] - mx)) / sum;
          }
          for (int64_t e = 0; e < d.hv; e++) {
            double acc = 0;
            for (int64_t j = 0; j < d.S; j++) acc += p[j] * vb[j * d.hv + e];
            res[0][row * d.hv + e] = acc;
          }
          continue;
        }
        const double *out = v[op->in[3]] + row * d.hv, *dout = v[op->in[5]] + row * d.hv;
        sdpa_ref_row(&d, q, k, b, h, i, v[op->in[4]][row], s, p);
        double D = 0;
        for (int64_t e = 0; e < d.hv; e++) D += dout[e] * out[e];
        for (int64_t j = 0; j < d.S; j++) {
          double acc = 0;
          for (int64_t e = 0; e < d.hv; e++) acc += dout[e] * vb[j * d.hv + e];
          double ds = p[j] * (acc - D);
          dp[j] = d.bf16 ? dtype_round_bf16(ds) : ds;
          double pj = d.bf16 ? dtype_round_bf16(p[j]) : p[j];
          for (int64_t e = 0; e < d.hv; e++) res[2][(kv * d.S + j) * d.hv + e] += pj * dout[e];
          for (int64_t c = 0; c < d.hs; c++) res[1][(kv * d.S + j) * d.hs + c] += d.scale * dp[j] * q[row * d.hs + c];
        }
        for (int64_t c = 0; c < d.hs; c++) {
          double acc = 0;
          for (int64_t j = 0; j < d.S; j++) acc += dp[j] * k[(kv * d.S + j) * d.hs + c];
          res[0][row * d.hs + c] = d.scale * acc;
        }
      }
  free(s), free(p), free(dp);
  for (int r = 0; r < 3; r++)
    if (r != which) free(res[r]);
  return res[which];
}

/* ---- fused cross-entropy (issue 14, item 3) ---------------------------------------------
 * CE_FUSED(x, w, targets) -> loss and its RESULTs 1 (dx1) and 2 (dw1), the loss's gradient
 * for dloss = 1, from the definition, one position at a time over all classes (the kernels'
 * blocks of rows change no sum here): l_c = x.w_c (w_c: row c of w [V, K] when tb, else
 * column c of w [K, V]), lse = log sum exp l, loss = mean(lse - l_target),
 * g_c = (exp(l_c - lse) - [c = target]) / N, dx1 = sum_c g_c w_c, dw1_c = sum_p g_c x_p.
 * Under precision = bf16 (x and w come rounded from precision.c's ops) each logit is rounded
 * as a product's result is, and g before its products, as the kernels do. */

static double *ev_ce_fused(const Graph *g, const Op *op, double **v, int which) {
  const Shape *xs = in_shape(g, op, 0);
  int64_t K = xs->d[xs->rank - 1], N = shape_numel(xs) / K, V = in_shape(g, op, 1)->d[op->tb ? 0 : 1];
  bool bf16 = g->train.precision == PREC_BF16;
  const double *x = v[op->in[0]], *w = v[op->in[1]], *t = v[op->in[2]];
  int64_t sw_c = op->tb ? K : 1, sw_k = op->tb ? 1 : V; /* w_c[k] = w[c * sw_c + k * sw_k] */
  double *loss = alloc_vals(1), *dx1 = alloc_vals(N * K), *dw1 = alloc_vals(V * K), *l = alloc_vals(V);
  for (int64_t p = 0; p < N; p++) {
    int64_t tgt = row_index(t[p], V, op);
    double mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < V; c++) {
      double acc = 0;
      for (int64_t k = 0; k < K; k++) acc += x[p * K + k] * w[c * sw_c + k * sw_k];
      l[c] = bf16 ? dtype_round_bf16(acc) : acc;
      mx = fmax(mx, l[c]);
    }
    for (int64_t c = 0; c < V; c++) sum += exp(l[c] - mx);
    double lse = mx + log(sum);
    loss[0] += lse - l[tgt];
    for (int64_t c = 0; c < V; c++) {
      double gc = (exp(l[c] - lse) - (c == tgt)) / (double)N;
      if (bf16) gc = dtype_round_bf16(gc);
      for (int64_t k = 0; k < K; k++) {
        dx1[p * K + k] += gc * w[c * sw_c + k * sw_k];
        dw1[c * sw_c + k * sw_k] += gc * x[p * K + k];
      }
    }
  }
  loss[0] /= (double)N;
  free(l);
  double *res[3] = {loss, dx1, dw1};
  for (int r = 0; r < 3; r++)
    if (r != which) free(res[r]);
  return res[which];
}

/* ---- the dispatcher ------------------------------------------------------------ */

static bool is_caller_leaf(OpKind k) { return k == OP_INPUT || k == OP_PARAM || k == OP_RECV; }

static double *ev_op(const Graph *g, const Op *op, double **v, const RefCtx *ctx) {
  switch (op->kind) {
  case OP_FULL: case OP_ARANGE: case OP_CAUSAL_MASK: return ev_creation(op);
  case OP_SUM: case OP_MEAN: case OP_AMAX: return ev_reduce(g, op, v);
  case OP_SOFTMAX: case OP_LOG_SOFTMAX: return ev_softmax(op, v);
  case OP_RESHAPE: case OP_PARAM_GRAD: case OP_ALLREDUCE: case OP_ALLGATHER: case OP_TP_ENTER: case OP_TP_SLICE:
  case OP_REDUCE_SCATTER:
    return ev_copy(g, op, v); /* one tp rank: the collectives are identities */
  case OP_TRANSPOSE: case OP_SLICE: case OP_EXPAND: return ev_gather(g, op, v);
  case OP_PAD: case OP_CONCAT: return ev_scatter(g, op, v);
  case OP_SUM_TO: return ev_sum_to(g, op, v);
  case OP_MATMUL: return ev_matmul(g, op, v);
  case OP_EMBEDDING: case OP_EMBEDDING_GRAD: return ev_embedding(g, op, v);
  case OP_CROSS_ENTROPY: case OP_CE_ROWS: case OP_CE_GRAD: return ev_cross_entropy(g, op, v);
  case OP_DROPOUT: return ev_dropout(op, v, ctx);
  case OP_ARGMAX: case OP_TOPK: return ev_argmax_topk(g, op, v);
  case OP_CUMSUM: case OP_CUMSUM_REV: return ev_cumsum(op, v);
  case OP_GATHER: case OP_GATHER_GRAD: return ev_gather_op(g, op, v);
  case OP_ONE_HOT: return ev_one_hot(op, v);
  case OP_IM2COL: case OP_COL2IM: return ev_patches(g, op, v);
  case OP_CHECK: return ev_check(g, op, v);
  case OP_SDPA: case OP_SDPA_GRAD: return ev_sdpa(g, op, v, 0);
  case OP_CE_FUSED: return ev_ce_fused(g, op, v, 0);
  case OP_RESULT: {
    const Op *of = g->ops[op->in[0]];
    if (of->kind == OP_CE_FUSED) return ev_ce_fused(g, of, v, op->axis);
    return ev_sdpa(g, of, v, op->axis);
  }
  case OP_SEND: return NULL;
  default:
    if (op_info[op->kind].cls == OPC_E) return ev_elementwise(g, op, v);
    die("refeval: no rule for %%%d %s", op->id, op_name(op->kind));
  }
}

void ref_eval(const Graph *g, double **vals, const RefCtx *ctx) {
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (is_caller_leaf(op->kind)) {
      if (!vals[i]) die("refeval: %%%d %s has no value", i, op_name(op->kind));
      continue;
    }
    for (int j = 0; j < op->nin; j++)
      if (!vals[op->in[j]]) die("refeval: %%%d reads %%%d, which has no value", i, op->in[j]);
    free(vals[i]);
    vals[i] = ev_op(g, op, vals, ctx);
  }
}

void ref_free(const Graph *g, double **vals) {
  for (int i = 0; i < g->nops; i++)
    if (!is_caller_leaf(g->ops[i]->kind)) {
      free(vals[i]);
      vals[i] = NULL;
    }
}
