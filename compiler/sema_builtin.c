/*
 * sema_builtin.c — the built-in functions of LANGUAGE.md, one line each in the
 * BUILTINS table (name, handler, op, required arguments, parameter names), and
 * indexing (x[..., a:b], x[i]). A handler evaluates its arguments (sema_eval.c),
 * folds an operation on compile-time values alone to a value, and makes its ops
 * through sema_ops.c.
 *
 * Where the ops of the next issue go: one BUILTINS line each, with a handler here
 * (bi_unary serves sin, cos, floor and silu; argmax, topk, cumsum, gather, one_hot
 * and conv2d take a handler of their own), their shape rules in sema_ops.c. The
 * built-ins lowered to existing ops (repeat, expand, stack, sdpa) are in
 * sema_lower.c, looked up after this table. When this file nears its limit, the neural-network built-ins
 * (embedding, cross_entropy, dropout, sdpa, conv2d) can move to a file beside it.
 *
 * Invariants:
 *  - Arguments are bound by name or position (sema_bind_args) before a handler runs;
 *    an unknown, repeated or missing argument is reported once.
 *  - A built-in that makes params (embedding) names its instance like a def call.
 */
#include "sema_int.h"

#include <math.h>
#include <string.h>

/* ---- argument binding -------------------------------------------------------------- */
enum { BI_MAXARGS = 4 };

typedef struct Builtin Builtin;
typedef Value (*BuiltinFn)(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args);
struct Builtin {
  const char *name;
  BuiltinFn fn;
  OpKind op;
  int nreq;      /* required args; -1: variadic (the fn reads call->list itself) */
  const char *params[BI_MAXARGS];
};

static bool bind_builtin_args(Sema *S, Node *call, const Builtin *b, Node **out) {
  int np = 0;
  while (np < BI_MAXARGS && b->params[np]) np++;
  return sema_bind_args(S, call, b->name, b->params, np, b->nreq, out);
}

static Value tensor_arg(Sema *S, Scope *sc, Node *e, const char *fn) {
  Value v = sema_eval(S, sc, e);
  if (v.kind == V_ERR || v.kind == V_TENSOR) return v;
  sema_err(S, e->loc, "%s needs a tensor here, not %s", fn, sema_value_desc(S, v));
  return verr();
}

static bool int_arg(Sema *S, Scope *sc, Node *e, int64_t dflt, const char *what, int64_t *out) {
  if (!e) { *out = dflt; return true; }
  return sema_const_int(S, sc, e, what, out);
}

/* ---- built-ins: elementwise ----------------------------------------------------------- */
static double gelu_tanh(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

static Value const_math(Sema *S, OpKind k, Value c, Loc loc) {
  double x = num_of(c);
  switch (k) {
  case OP_EXP: return vfloat(exp(x), loc);
  case OP_LOG: return vfloat(log(x), loc);
  case OP_SQRT: return vfloat(sqrt(x), loc);
  case OP_RSQRT: return vfloat(1 / sqrt(x), loc);
  case OP_TANH: return vfloat(tanh(x), loc);
  case OP_SIGMOID: return vfloat(1 / (1 + exp(-x)), loc);
  case OP_GELU: return vfloat(gelu_tanh(x), loc);
  case OP_RELU: return c.kind == V_INT ? vint(c.i > 0 ? c.i : 0, loc) : vfloat(x > 0 ? x : 0, loc);
  case OP_ABS:
    if (c.kind == V_INT && c.i == INT64_MIN) break;
    return c.kind == V_INT ? vint(c.i < 0 ? -c.i : c.i, loc) : vfloat(fabs(x), loc);
  case OP_SIN: return vfloat(sin(x), loc);
  case OP_COS: return vfloat(cos(x), loc);
  case OP_FLOOR: return c.kind == V_INT ? c : vfloat(floor(x), loc);
  case OP_SILU: return vfloat(x / (1 + exp(-x)), loc);
  default: break;
  }
  sema_err(S, loc, "cannot compute %s of %s", op_name(k), sema_value_desc(S, c));
  return verr();
}

static Value bi_unary(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = sema_eval(S, sc, args[0]);
  if (is_num(x)) return const_math(S, b->op, x, call->loc);
  return sema_unary(S, b->op, x, call->loc);
}

static Value bi_pow(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = sema_eval(S, sc, args[0]);
  double c;
  if (!sema_const_num(S, sc, args[1], "pow's exponent", &c) || x.kind == V_ERR) return verr();
  if (is_num(x)) return vfloat(pow(num_of(x), c), call->loc);
  Value r = sema_unary(S, OP_POW, x, call->loc);
  if (r.kind == V_TENSOR) sema_opv(S, r)->value = c;
  return r;
}

static Value bi_maxmin(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = sema_eval(S, sc, args[0]), y = sema_eval(S, sc, args[1]);
  if (x.kind == V_ERR || y.kind == V_ERR) return verr();
  if (is_num(x) && is_num(y)) {
    bool mx = b->op == OP_MAXIMUM;
    if (x.kind == V_INT && y.kind == V_INT) return vint(mx ? (x.i > y.i ? x.i : y.i) : (x.i < y.i ? x.i : y.i), call->loc);
    return vfloat(mx ? fmax(num_of(x), num_of(y)) : fmin(num_of(x), num_of(y)), call->loc);
  }
  if ((x.kind != V_TENSOR && !is_num(x)) || (y.kind != V_TENSOR && !is_num(y))) {
    sema_err(S, call->loc, "%s needs tensors or numbers, not %s and %s", b->name, sema_value_desc(S, x), sema_value_desc(S, y));
    return verr();
  }
  Value r = sema_binary(S, b->op, x, y, call->loc, b->name);
  if (r.kind == V_TENSOR && sema_opv(S, r)->dtype == DT_BOOL) {
    sema_err(S, call->loc, "%s cannot apply to bool tensors", b->name);
    return verr();
  }
  return r;
}

static Value bi_where(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value m = sema_eval(S, sc, args[0]), x = sema_eval(S, sc, args[1]), y = sema_eval(S, sc, args[2]);
  if (m.kind == V_ERR || x.kind == V_ERR || y.kind == V_ERR) return verr();
  if (m.kind == V_BOOL) return m.i ? x : y;
  if (m.kind != V_TENSOR || sema_opv(S, m)->dtype != DT_BOOL) {
    sema_err(S, args[0]->loc, "where's mask must be a bool tensor, not %s", sema_value_desc(S, m));
    return verr();
  }
  if (x.kind != V_TENSOR && y.kind != V_TENSOR) {
    DType dt = x.kind == V_BOOL ? DT_BOOL : (x.kind == V_INT && y.kind == V_INT) ? DT_I32 : DT_F32;
    x = sema_scalar(S, x, dt, call->loc);
  }
  if (x.kind == V_TENSOR && y.kind != V_TENSOR) y = sema_scalar(S, y, sema_opv(S, x)->dtype, call->loc);
  if (y.kind == V_TENSOR && x.kind != V_TENSOR) x = sema_scalar(S, x, sema_opv(S, y)->dtype, call->loc);
  if (x.kind != V_TENSOR || y.kind != V_TENSOR) return verr();
  Op *xi = sema_opv(S, x), *yi = sema_opv(S, y), *mi = sema_opv(S, m);
  if (xi->dtype != yi->dtype) {
    sema_err(S, call->loc, "where mixes element types %s and %s (use cast)", dtype_name(xi->dtype), dtype_name(yi->dtype));
    sema_note_operands(S, x, y);
    return verr();
  }
  Shape s1, s;
  if (!shape_broadcast(&mi->shape, &xi->shape, &s1) || !shape_broadcast(&s1, &yi->shape, &s)) {
    sema_err(S, call->loc, "shapes %s, %s and %s do not broadcast in where", sema_shape_str(S, mi), sema_shape_str(S, xi), sema_shape_str(S, yi));
    sema_note_made(S, m);
    sema_note_operands(S, x, y);
    return verr();
  }
  if (!sema_check_shape(S, &s, call->loc)) return verr();
  int in[3] = {m.op, x.op, y.op};
  Op *op = sema_op(S, OP_WHERE, 3, in, call->loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = xi->dtype;
  return vtensor(S, op);
}

/* v as a value of float type dt holds it: the f32 value, rounded to bf16 or f16 for those. */
static double round_to_float(double v, DType dt) {
  double f = (double)(float)v;
  return dt == DT_BF16 ? dtype_round_bf16(f) : dt == DT_F16 ? dtype_round_f16(f) : f;
}

static Value bi_cast(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = sema_eval(S, sc, args[0]), t = sema_eval(S, sc, args[1]);
  if (x.kind == V_ERR || t.kind == V_ERR) return verr();
  if (t.kind != V_DTYPE) {
    sema_err(S, args[1]->loc, "cast needs an element type (f32, bf16, f16, i32, bool), not %s", sema_value_desc(S, t));
    return verr();
  }
  DType dt = (DType)t.i;
  if (is_num(x) || x.kind == V_BOOL) {
    double v = x.kind == V_FLOAT ? x.f : (double)x.i;
    if (dt == DT_I32) { /* toward zero, as at run time; a value past i32's range is an error, not a wrap */
      if (!(v > -2147483649.0 && v < 2147483648.0)) {
        sema_err(S, call->loc, "cast of %.17g to i32: outside i32's range [-2147483648, 2147483647]", v);
        return verr();
      }
      return vint((int64_t)v, call->loc);
    }
    if (dt == DT_BOOL) return vbool(v != 0, call->loc);
    /* a float type rounds as the run-time cast of the f32 value does (cast(1.001, bf16) is
       1.0, cast(70000, f16) inf: pass 52 found them unrounded) */
    return vfloat(round_to_float(v, dt), call->loc);
  }
  if (x.kind != V_TENSOR) {
    sema_err(S, args[0]->loc, "cast needs a tensor, not %s", sema_value_desc(S, x));
    return verr();
  }
  return sema_cast_to(S, x, dt, call->loc);
}

/* ---- built-ins: reductions ---------------------------------------------------------- */
static Value bi_reduce(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], b->name);
  int64_t axis = AXIS_ALL;
  bool keep = false;
  if (args[1] && !sema_const_int(S, sc, args[1], "an axis", &axis)) return verr();
  if (args[2]) {
    Value k = sema_eval(S, sc, args[2]);
    if (k.kind != V_BOOL) {
      if (k.kind != V_ERR) sema_err(S, args[2]->loc, "keepdims must be a compile-time bool");
      return verr();
    }
    keep = k.i;
  }
  if (x.kind == V_ERR) return x;
  Op *xi = sema_opv(S, x);
  if (xi->dtype == DT_BOOL) {
    sema_err(S, call->loc, "%s cannot apply to a bool tensor", b->name);
    return verr();
  }
  if (b->op == OP_MEAN && !dtype_is_float(xi->dtype)) { /* (as torch.mean) */
    sema_err(S, call->loc, "mean needs a float tensor, not %s: cast it first (cast(x, f32))", dtype_name(xi->dtype));
    return verr();
  }
  Shape s = {0};
  int ax = AXIS_ALL;
  if ((axis != AXIS_ALL || args[1]) && !sema_scalar_axis(xi, axis)) { /* a 0-d tensor's axis 0: all of it */
    ax = sema_norm_axis(S, axis, xi->shape.rank, args[1]->loc);
    if (ax < 0) return verr();
  }
  for (int i = 0; i < xi->shape.rank; i++) {
    bool reduced = ax == AXIS_ALL || ax == i;
    if (!reduced) s.d[s.rank++] = xi->shape.d[i];
    else if (keep) s.d[s.rank++] = 1;
  }
  Op *op = sema_op(S, b->op, 1, &x.op, call->loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = xi->dtype;
  op->axis = ax;
  op->keepdims = keep;
  return vtensor(S, op);
}

static Value bi_softmax(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], b->name);
  int64_t axis;
  if (!int_arg(S, sc, args[1], -1, "an axis", &axis) || x.kind == V_ERR) return verr();
  Op *xi = sema_opv(S, x);
  if (!dtype_is_float(xi->dtype)) {
    sema_err(S, call->loc, "%s needs a float tensor, not %s", b->name, dtype_name(xi->dtype));
    return verr();
  }
  Shape shape = xi->shape;
  if (sema_scalar_axis(xi, axis)) { /* a 0-d tensor: a row of one, back to rank 0 after */
    if ((x = sema_scalar_as_row(S, x, call->loc)).kind == V_ERR) return x;
    xi = sema_opv(S, x);
    axis = 0;
  }
  int ax = sema_norm_axis(S, axis, xi->shape.rank, args[1] ? args[1]->loc : call->loc);
  if (ax < 0) return verr();
  Op *op = sema_op(S, b->op, 1, &x.op, call->loc);
  if (!op) return verr();
  op->shape = xi->shape;
  op->dtype = xi->dtype;
  op->axis = ax;
  Value r = vtensor(S, op);
  return shape.rank == xi->shape.rank ? r : sema_reshape(S, r, shape, call->loc);
}

/* ---- built-ins: shape ----------------------------------------------------------------- */
static Value bi_reshape(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  NodeList *l = &call->list;
  if (l->n < 1 || l->items[0]->name) { sema_err(S, call->loc, "reshape(x, d0, d1, ...) needs a tensor first"); return verr(); }
  Value x = tensor_arg(S, sc, l->items[0]->a, "reshape");
  Shape s = {0};
  int infer = -1;
  bool ok = true;
  if (l->n - 1 > MPL_MAX_RANK) { sema_err(S, call->loc, "more than %d dimensions", MPL_MAX_RANK); return verr(); }
  for (int i = 1; i < l->n; i++) {
    Node *arg = l->items[i];
    int64_t v;
    if (arg->name) { sema_err(S, arg->loc, "reshape takes no keyword arguments"); ok = false; continue; }
    if (!sema_const_int(S, sc, arg->a, "a dimension", &v)) { ok = false; continue; }
    if (v == -1 && infer < 0) infer = s.rank;
    else if (v <= 0) { sema_err(S, arg->loc, "dimension %lld in reshape (one -1 is allowed)", (long long)v); ok = false; }
    s.d[s.rank++] = v;
  }
  if (!ok || x.kind == V_ERR) return verr();
  Op *xi = sema_opv(S, x);
  int64_t n = shape_numel(&xi->shape), known = 1;
  for (int i = 0; i < s.rank; i++)
    if (i != infer) {
      if (s.d[i] > SEMA_MAX_NUMEL || known > SEMA_MAX_NUMEL / s.d[i]) { known = -1; break; }
      known *= s.d[i];
    }
  if (infer >= 0 && known > 0 && n % known == 0) s.d[infer] = n / known;
  if (known <= 0 || (infer >= 0 ? n % known != 0 : known != n)) {
    char buf[160];
    if (infer >= 0) s.d[infer] = -1;
    sema_err(S, call->loc, "cannot reshape %s (%lld elements) to %s", sema_shape_str(S, xi), (long long)n, shape_str(&s, buf, sizeof buf));
    sema_note_made(S, x);
    return verr();
  }
  if (shape_eq(&s, &xi->shape)) return x;
  return sema_reshape(S, x, s, call->loc);
}

static Value bi_transpose(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = sema_eval(S, sc, args[0]);
  if (!args[1] != !args[2]) { /* torch.transpose takes both; none swaps the last two */
    sema_err(S, call->loc, "transpose takes two axes or none (the last two), not one");
    return verr();
  }
  Value i = args[1] ? sema_eval(S, sc, args[1]) : vint(-2, call->loc);
  Value j = args[2] ? sema_eval(S, sc, args[2]) : vint(-1, call->loc);
  return sema_transpose(S, x, i, j, call->loc);
}

static Value bi_split(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], "split");
  int64_t n, axis;
  if (!sema_const_int(S, sc, args[1], "split's number of parts", &n)) return verr();
  if (!int_arg(S, sc, args[2], -1, "an axis", &axis) || x.kind == V_ERR) return verr();
  Op *xi = sema_opv(S, x);
  int ax = sema_norm_axis(S, axis, xi->shape.rank, args[2] ? args[2]->loc : call->loc);
  if (ax < 0) return verr();
  if (n <= 0 || n > 4096) { /* (checked first: 8194 does divide into 4097 parts) */
    sema_err(S, args[1] ? args[1]->loc : call->loc, "split: %lld parts; split makes 1 to 4096", (long long)n);
    return verr();
  }
  if (xi->shape.d[ax] % n) {
    sema_err(S, call->loc, "split: dimension %d of %s (%lld) does not divide into %lld equal parts", ax, sema_shape_str(S, xi), (long long)xi->shape.d[ax], (long long)n);
    sema_note_made(S, x);
    return verr();
  }
  int64_t w = xi->shape.d[ax] / n;
  Value t = {.kind = V_TUPLE, .n = (int)n, .loc = call->loc};
  t.items = arena_alloc(S->a, sizeof(Value) * (size_t)n);
  for (int i = 0; i < n; i++) {
    t.items[i] = n == 1 ? x : sema_slice(S, x, ax, i * w, (i + 1) * w, call->loc);
    if (t.items[i].kind == V_ERR) return verr();
  }
  return t;
}

static Value bi_concat(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  NodeList *l = &call->list;
  int64_t axis = 0;
  int nt = 0, cap = 0;
  Value *vals = arena_alloc(S->a, sizeof(Value) * (size_t)(l->n + 1));
  Value first = verr();
  bool ok = true;
  for (int i = 0; i < l->n; i++) {
    Node *arg = l->items[i];
    vals[i] = verr();
    if (arg->name && !strcmp(arg->name, "axis")) { ok &= sema_const_int(S, sc, arg->a, "an axis", &axis); continue; }
    if (arg->name) { sema_err(S, arg->loc, "concat has no argument '%s'", arg->name); ok = false; continue; }
    Value v = sema_eval(S, sc, arg->a);
    if (v.kind == V_INT && i == l->n - 1 && cap > 0) { axis = v.i; continue; }
    if (v.kind == V_TUPLE) { vals[i] = v; cap += v.n; continue; }
    if (v.kind != V_TENSOR) { if (v.kind != V_ERR) sema_err(S, arg->loc, "concat needs tensors, not %s", sema_value_desc(S, v)); ok = false; continue; }
    vals[i] = v;
    cap++;
  }
  int *in = arena_alloc(S->a, sizeof(int) * (size_t)(cap + 1));
  for (int i = 0; i < l->n; i++) {
    Value v = vals[i];
    for (int j = 0; j < (v.kind == V_TUPLE ? v.n : v.kind == V_TENSOR); j++) {
      Value t = v.kind == V_TUPLE ? v.items[j] : v;
      if (nt == 0) first = t;
      in[nt++] = t.op;
    }
  }
  if (!ok) return verr();
  if (nt == 0) { sema_err(S, call->loc, "concat needs at least one tensor"); return verr(); }
  if (nt == 1) return first;
  Op *x0 = S->g->ops[in[0]];
  int ax = sema_norm_axis(S, axis, x0->shape.rank, call->loc);
  if (ax < 0) return verr();
  Shape s = x0->shape;
  for (int i = 1; i < nt; i++) {
    Op *xi = S->g->ops[in[i]];
    bool same = xi->shape.rank == s.rank && xi->dtype == x0->dtype;
    for (int k = 0; same && k < s.rank; k++) same = k == ax || xi->shape.d[k] == s.d[k];
    if (!same) {
      sema_err(S, call->loc, "concat on axis %d: %s%s and %s%s do not match", ax, dtype_name(x0->dtype), sema_shape_str(S, x0), dtype_name(xi->dtype), sema_shape_str(S, xi));
      sema_note_operands(S, vtensor(S, x0), vtensor(S, xi));
      return verr();
    }
    s.d[ax] += xi->shape.d[ax];
  }
  if (!sema_check_shape(S, &s, call->loc)) return verr();
  Op *op = sema_op(S, OP_CONCAT, nt, in, call->loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = x0->dtype;
  op->axis = ax;
  return vtensor(S, op);
}

/* ---- built-ins: creation --------------------------------------------------------------- */
static Value bi_arange(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  int64_t n;
  if (!sema_const_int(S, sc, args[0], "arange's length", &n)) return verr();
  Shape s = {1, {n}};
  if (!sema_check_shape(S, &s, call->loc)) return verr();
  if (n > INT32_MAX) { sema_err(S, call->loc, "arange(%lld) does not fit in i32", (long long)n); return verr(); }
  Op *op = sema_op(S, OP_ARANGE, 0, NULL, call->loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = DT_I32;
  return vtensor(S, op);
}

static Value bi_full(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  NodeList *l = &call->list;
  if (l->n < 1 || l->items[0]->name) { sema_err(S, call->loc, "full(value, d0, ...) needs a value first"); return verr(); }
  Value v = sema_eval(S, sc, l->items[0]->a);
  Shape s = {0};
  bool ok = true;
  DType dt = v.kind == V_BOOL ? DT_BOOL : v.kind == V_INT ? DT_I32 : DT_F32;
  for (int i = 1; i < l->n; i++) {
    Node *arg = l->items[i];
    if (arg->name && !strcmp(arg->name, "dtype")) {
      Value t = sema_eval(S, sc, arg->a);
      if (t.kind == V_DTYPE) dt = (DType)t.i;
      else { if (t.kind != V_ERR) sema_err(S, arg->loc, "dtype must be an element type"); ok = false; }
      continue;
    }
    int64_t d;
    if (arg->name) { sema_err(S, arg->loc, "full has no argument '%s'", arg->name); ok = false; continue; }
    if (s.rank == MPL_MAX_RANK) { sema_err(S, arg->loc, "more than %d dimensions", MPL_MAX_RANK); ok = false; break; }
    if (!sema_const_int(S, sc, arg->a, "a dimension", &d)) { ok = false; continue; }
    s.d[s.rank++] = d;
  }
  if (!ok || v.kind == V_ERR) return verr();
  if (!is_num(v) && v.kind != V_BOOL) { sema_err(S, l->items[0]->loc, "full's value must be a compile-time number or bool"); return verr(); }
  if (dt == DT_I32 && v.kind != V_BOOL && !(num_of(v) > -2147483649.0 && num_of(v) < 2147483648.0)) {
    sema_err(S, l->items[0]->loc, "full's value %.17g does not fit in i32 [-2147483648, 2147483647]", num_of(v));
    return verr();
  }
  if (!sema_check_shape(S, &s, call->loc)) return verr();
  Op *op = sema_op(S, OP_FULL, 0, NULL, call->loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = dt;
  op->value = v.kind == V_FLOAT ? v.f : (double)v.i;
  /* a bf16 or f16 tensor holds the value rounded to its type, as torch.full(..., dtype) and
     cast do (precision.c takes a FULL's value as it is: a literal beside a half tensor is an
     f32 number; pass 109 found full(0.1, 4, dtype = bf16) reading 0.1) */
  if (dt == DT_BF16 || dt == DT_F16) op->value = round_to_float(op->value, dt);
  return vtensor(S, op);
}

static Value bi_causal_mask(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  int64_t n;
  if (!sema_const_int(S, sc, args[0], "causal_mask's size", &n)) return verr();
  Shape s = {2, {n, n}};
  if (!sema_check_shape(S, &s, call->loc)) return verr();
  Op *op = sema_op(S, OP_CAUSAL_MASK, 0, NULL, call->loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = DT_BOOL;
  return vtensor(S, op);
}

/* ---- built-ins: neural ---------------------------------------------------------------- */
static Value bi_embedding(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value idx = tensor_arg(S, sc, args[0], "embedding");
  int64_t rows, cols;
  bool ok = sema_const_int(S, sc, args[1], "embedding's rows", &rows);
  ok &= sema_const_int(S, sc, args[2], "embedding's cols", &cols);
  const char *local = sema_instance_name(S, sc, call, "embedding");
  if (!ok || idx.kind == V_ERR || !local) return local ? sema_instance_broken(S, sc, local) : verr();
  Op *ii = sema_opv(S, idx);
  if (ii->dtype != DT_I32) {
    sema_err(S, args[0]->loc, "embedding's indices must be i32, not %s", dtype_name(ii->dtype));
    sema_note_made(S, idx);
    return sema_instance_broken(S, sc, local);
  }
  Shape ws = {2, {rows, cols}};
  if (!sema_check_shape(S, &ws, call->loc)) return sema_instance_broken(S, sc, local);
  Shape s = ii->shape;
  if (s.rank == MPL_MAX_RANK) { sema_err(S, call->loc, "more than %d dimensions", MPL_MAX_RANK); return sema_instance_broken(S, sc, local); }
  s.d[s.rank++] = cols;
  if (!sema_check_shape(S, &s, call->loc)) return sema_instance_broken(S, sc, local);
  const char *global = scope_global(S, sc, arena_printf(S->a, "%s.weight", local));
  Op *w = sema_new_param(S, global, DT_F32, ws, INIT_NORMAL, 0.02, 0, call->loc);
  if (!w) return verr();
  sema_note_bound(S, idx, rows);
  Op *check;
  if (!sema_guard_index(S, idx, OP_EMBEDDING, rows, call->loc, &check)) return verr();
  int in[2] = {idx.op, w->id};
  Op *op = sema_op(S, OP_EMBEDDING, 2, in, call->loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = DT_F32;
  sema_guard_stage(check, op);
  return vtensor(S, op);
}

static Value bi_cross_entropy(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value lg = tensor_arg(S, sc, args[0], "cross_entropy"), tg = tensor_arg(S, sc, args[1], "cross_entropy");
  if (lg.kind == V_ERR || tg.kind == V_ERR) return verr();
  Op *l = sema_opv(S, lg), *t = sema_opv(S, tg);
  if (!dtype_is_float(l->dtype) || t->dtype != DT_I32) {
    sema_err(S, call->loc, "cross_entropy needs float logits and i32 targets, not %s and %s", dtype_name(l->dtype), dtype_name(t->dtype));
    sema_note_operands(S, lg, tg);
    return verr();
  }
  bool same = l->shape.rank == t->shape.rank + 1;
  for (int i = 0; same && i < t->shape.rank; i++) same = l->shape.d[i] == t->shape.d[i];
  if (!same) {
    sema_err(S, call->loc, "cross_entropy: logits %s and targets %s do not match (logits are [..., classes], targets [...])", sema_shape_str(S, l), sema_shape_str(S, t));
    sema_note_operands(S, lg, tg);
    return verr();
  }
  sema_note_bound(S, tg, l->shape.d[l->shape.rank - 1]);
  Op *check;
  if (!sema_guard_index(S, tg, OP_CROSS_ENTROPY, l->shape.d[l->shape.rank - 1], call->loc, &check)) return verr();
  int in[2] = {lg.op, tg.op};
  Op *op = sema_op(S, OP_CROSS_ENTROPY, 2, in, call->loc);
  if (!op) return verr();
  op->shape = (Shape){0};
  op->dtype = DT_F32;
  sema_guard_stage(check, op);
  return vtensor(S, op);
}

static Value bi_dropout(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], "dropout");
  double p;
  if (!sema_const_num(S, sc, args[1], "dropout's p", &p) || x.kind == V_ERR) return verr();
  /* p = 1 drops everything while training (PyTorch's zeros; evaluation passes x) */
  if (!(p >= 0 && p <= 1)) { sema_err(S, args[1]->loc, "dropout's p must be in [0, 1], not %g", p); return verr(); }
  Op *xi = sema_opv(S, x);
  if (!dtype_is_float(xi->dtype)) { sema_err(S, call->loc, "dropout needs a float tensor"); return verr(); }
  if (p == 0) return x;
  Op *op = sema_op(S, OP_DROPOUT, 1, &x.op, call->loc);
  if (!op) return verr();
  op->shape = xi->shape;
  op->dtype = xi->dtype;
  op->value = p;
  op->key = S->dropout_keys++;
  /* the masks are indexed by the element's place in the step's whole batch, so that every
     number of micro-batches and replicas draws the same; a value of no model input has no
     batch: one mask for the step (pass 60: each micro-batch drew its own) */
  op->step_mask = !graph_reads_input(S->g, x.op);
  return vtensor(S, op);
}

/* ---- built-ins: v2 ops with kernels of their own (issue 13, item 1) ---------------------- */
static bool keepdims_arg(Sema *S, Scope *sc, Node *e, bool *out) {
  *out = false;
  if (!e) return true;
  Value k = sema_eval(S, sc, e);
  if (k.kind != V_BOOL) {
    if (k.kind != V_ERR) sema_err(S, e->loc, "keepdims must be a compile-time bool");
    return false;
  }
  *out = k.i;
  return true;
}

static Value bi_argmax(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], b->name);
  int64_t axis;
  bool keep, ok = sema_const_int(S, sc, args[1], "an axis", &axis);
  if (!keepdims_arg(S, sc, args[2], &keep) || !ok || x.kind == V_ERR) return verr();
  return sema_argmax(S, x, axis, keep, call->loc, args[1]->loc);
}

static Value bi_cumsum(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], b->name);
  int64_t axis;
  if (!sema_const_int(S, sc, args[1], "an axis", &axis) || x.kind == V_ERR) return verr();
  return sema_cumsum(S, x, axis, call->loc, args[1]->loc);
}

static Value bi_topk(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], b->name);
  int64_t k, axis;
  bool ok = sema_const_int(S, sc, args[1], "topk's k", &k);
  if (!int_arg(S, sc, args[2], -1, "an axis", &axis) || !ok || x.kind == V_ERR) return verr();
  return sema_topk(S, x, k, axis, call->loc, args[1]->loc, args[2] ? args[2]->loc : call->loc);
}

static Value bi_gather(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], b->name), idx = tensor_arg(S, sc, args[1], b->name);
  int64_t axis;
  if (!sema_const_int(S, sc, args[2], "an axis", &axis) || x.kind == V_ERR || idx.kind == V_ERR) return verr();
  return sema_gather(S, x, idx, axis, call->loc, args[2]->loc);
}

static Value bi_one_hot(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value idx = tensor_arg(S, sc, args[0], b->name);
  int64_t n;
  if (!sema_const_int(S, sc, args[1], "one_hot's number of classes", &n) || idx.kind == V_ERR) return verr();
  return sema_one_hot(S, idx, n, call->loc, args[1]->loc);
}

static Value bi_conv2d(Sema *S, Scope *sc, Node *call, const Builtin *b, Node **args) {
  Value x = tensor_arg(S, sc, args[0], b->name), w = tensor_arg(S, sc, args[1], b->name);
  int64_t stride, pad;
  bool ok = int_arg(S, sc, args[2], 1, "conv2d's stride", &stride);
  if (!int_arg(S, sc, args[3], 0, "conv2d's padding", &pad) || !ok || x.kind == V_ERR || w.kind == V_ERR) return verr();
  return sema_conv2d(S, x, w, stride, pad, call->loc);
}

/* ORDER: none; looked up by name. */
#define BUILTINS(X)                                                          \
  X("exp", bi_unary, OP_EXP, 1, "x") X("log", bi_unary, OP_LOG, 1, "x")      \
  X("sqrt", bi_unary, OP_SQRT, 1, "x") X("rsqrt", bi_unary, OP_RSQRT, 1, "x") \
  X("tanh", bi_unary, OP_TANH, 1, "x") X("sigmoid", bi_unary, OP_SIGMOID, 1, "x") \
  X("relu", bi_unary, OP_RELU, 1, "x") X("gelu", bi_unary, OP_GELU, 1, "x")  \
  X("abs", bi_unary, OP_ABS, 1, "x")                                         \
  X("pow", bi_pow, OP_POW, 2, "x", "c")                                      \
  X("maximum", bi_maxmin, OP_MAXIMUM, 2, "a", "b")                           \
  X("minimum", bi_maxmin, OP_MINIMUM, 2, "a", "b")                           \
  X("where", bi_where, OP_WHERE, 3, "mask", "a", "b")                        \
  X("cast", bi_cast, OP_CAST, 2, "x", "dtype")                               \
  X("sum", bi_reduce, OP_SUM, 1, "x", "axis", "keepdims")                    \
  X("mean", bi_reduce, OP_MEAN, 1, "x", "axis", "keepdims")                  \
  X("amax", bi_reduce, OP_AMAX, 1, "x", "axis", "keepdims")                  \
  X("softmax", bi_softmax, OP_SOFTMAX, 1, "x", "axis")                       \
  X("log_softmax", bi_softmax, OP_LOG_SOFTMAX, 1, "x", "axis")               \
  X("reshape", bi_reshape, OP_RESHAPE, -1)                                   \
  X("transpose", bi_transpose, OP_TRANSPOSE, 1, "x", "a", "b")               \
  X("split", bi_split, OP_SLICE, 2, "x", "n", "axis")                        \
  X("concat", bi_concat, OP_CONCAT, -1)                                      \
  X("arange", bi_arange, OP_ARANGE, 1, "n")                                  \
  X("full", bi_full, OP_FULL, -1)                                            \
  X("causal_mask", bi_causal_mask, OP_CAUSAL_MASK, 1, "T")                   \
  X("embedding", bi_embedding, OP_EMBEDDING, 3, "idx", "rows", "cols")       \
  X("cross_entropy", bi_cross_entropy, OP_CROSS_ENTROPY, 2, "logits", "targets") \
  X("dropout", bi_dropout, OP_DROPOUT, 2, "x", "p")                         \
  /* v2 ops with kernels of their own (issue 13, item 1) */                  \
  X("sin", bi_unary, OP_SIN, 1, "x") X("cos", bi_unary, OP_COS, 1, "x")      \
  X("floor", bi_unary, OP_FLOOR, 1, "x") X("silu", bi_unary, OP_SILU, 1, "x") \
  X("argmax", bi_argmax, OP_ARGMAX, 2, "x", "axis", "keepdims")              \
  X("cumsum", bi_cumsum, OP_CUMSUM, 2, "x", "axis")                          \
  X("topk", bi_topk, OP_TOPK, 2, "x", "k", "axis")                           \
  X("gather", bi_gather, OP_GATHER, 3, "x", "idx", "axis")                   \
  X("one_hot", bi_one_hot, OP_ONE_HOT, 2, "idx", "n")                        \
  X("conv2d", bi_conv2d, OP_IM2COL, 2, "x", "w", "stride", "padding")

static const Builtin builtins[] = {
#define X(name, fn, op, nreq, ...) {name, fn, op, nreq, {__VA_ARGS__}},
    BUILTINS(X)
#undef X
};

Value sema_builtin(Sema *S, Scope *sc, Node *call, const char *name, bool *found) {
  for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
    const Builtin *b = &builtins[i];
    if (strcmp(b->name, name)) continue;
    *found = true;
    if (call->as_name && b->op != OP_EMBEDDING) {
      sema_err(S, call->as_name->loc, "'as' names an instance, but %s declares no params", name);
      return verr();
    }
    Node *args[BI_MAXARGS] = {0};
    if (b->nreq >= 0 && !bind_builtin_args(S, call, b, args)) {
      /* a call that names an instance (embedding ... as wte) marks it broken, so a use of
         wte.weight reports nothing more (pass 71: "unknown name 'wte'" after the first) */
      const char *local = call->as_name && b->fn == bi_embedding ? sema_instance_name(S, sc, call, b->name) : NULL;
      return local ? sema_instance_broken(S, sc, local) : verr();
    }
    return b->fn(S, sc, call, b, args);
  }
  return sema_lowered_builtin(S, sc, call, name, found); /* repeat, expand, stack, sdpa */
}

void sema_suggest_builtins(Suggest *g) {
  for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) sema_suggest(g, builtins[i].name);
  sema_suggest_lowered(g);
}

/* ---- indexing: x[..., a:b], x[i] ----------------------------------------------------- */
static bool subscript_range(Sema *S, Scope *sc, Node *sub, int64_t dim, int64_t *lo, int64_t *hi, bool *drop) {
  *drop = false;
  if (sub->kind == N_SLICE) {
    int64_t a = 0, b = dim;
    if (sub->a && !sema_const_int(S, sc, sub->a, "a slice bound", &a)) return false;
    if (sub->b && !sema_const_int(S, sc, sub->b, "a slice bound", &b)) return false;
    int64_t ua = a, ub = b; /* as written: the message names them, not their clamped forms */
    if (a < 0) a += dim;
    if (b < 0) b += dim;
    a = a < 0 ? 0 : a > dim ? dim : a;
    b = b < 0 ? 0 : b > dim ? dim : b;
    if (a >= b) {
      char w[64] = "";
      if (a != ua || b != ub) snprintf(w, sizeof w, " (%lld:%lld)", (long long)a, (long long)b);
      sema_err(S, sub->loc, "empty slice %lld:%lld%s of a dimension of size %lld", (long long)ua, (long long)ub, w,
               (long long)dim);
      return false;
    }
    *lo = a;
    *hi = b;
    return true;
  }
  int64_t i;
  if (!sema_const_int(S, sc, sub, "an index", &i)) return false;
  int64_t j = i < 0 ? i + dim : i;
  if (j < 0 || j >= dim) { sema_err(S, sub->loc, "index %lld is out of range for a dimension of size %lld", (long long)i, (long long)dim); return false; }
  *lo = j;
  *hi = j + 1;
  *drop = true;
  return true;
}

Value sema_index(Sema *S, Scope *sc, Node *e, Value x) {
  if (x.kind != V_TENSOR) {
    sema_err(S, e->loc, "%s cannot be indexed", sema_value_desc(S, x));
    return verr();
  }
  Shape s0 = sema_opv(S, x)->shape;
  int nsub = e->list.n, ell = -1;
  for (int i = 0; i < nsub; i++)
    if (e->list.items[i]->kind == N_ELLIPSIS) {
      if (ell >= 0) { sema_err(S, e->list.items[i]->loc, "only one '...' is allowed"); return verr(); }
      ell = i;
    }
  int nreal = nsub - (ell >= 0);
  if (nreal > s0.rank) {
    sema_err(S, e->loc, "%d subscripts for a tensor of rank %d", nreal, s0.rank);
    return verr();
  }
  bool dropped[MPL_MAX_RANK] = {0};
  for (int i = 0; i < nsub; i++) {
    if (i == ell) continue;
    int axis = ell >= 0 && i > ell ? s0.rank - (nsub - i) : i;
    int64_t lo, hi;
    if (!subscript_range(S, sc, e->list.items[i], s0.d[axis], &lo, &hi, &dropped[axis])) return verr();
    if (lo == 0 && hi == s0.d[axis]) continue;
    x = sema_slice(S, x, axis, lo, hi, e->loc);
    if (x.kind == V_ERR) return x;
  }
  Shape s = {0};
  bool any = false;
  for (int i = 0; i < s0.rank; i++) {
    if (dropped[i]) { any = true; continue; }
    s.d[s.rank++] = sema_opv(S, x)->shape.d[i];
  }
  return any ? sema_reshape(S, x, s, e->loc) : x;
}
