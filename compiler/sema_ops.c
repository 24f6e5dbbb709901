/*
 * sema_ops.c — tensor operations of the front end, on values already evaluated: op
 * creation with placement, broadcasting, dtype checks, the matrix product, transpose,
 * slicing and reshaping. It evaluates no AST: sema_eval.c's operators and
 * sema_builtin.c's built-in functions call it with their operands' values. A new op's
 * shape and dtype rule goes here (sin, cos, floor, silu and % are sema_unary and
 * sema_binary cases; argmax, topk, cumsum, gather, one_hot, repeat, expand, stack,
 * sdpa and conv2d a function each), its built-in function in sema_builtin.c.
 *
 * Invariants:
 *  - Every op goes through sema_op(): it applies the placement in effect (stage,
 *    segment, @recompute) and the op-count cap; it returns NULL once a limit is hit.
 *  - Shapes are checked before an op is made: every dim > 0 and numel <= 2^40.
 *  - Every shape mismatch names both shapes and notes where each operand was made.
 *  - Scalar constants in tensor expressions become rank-0 FULL ops with the
 *    tensor's dtype.
 */
#include "sema_int.h"

#include <math.h>
#include <string.h>

/* ---- ops ---------------------------------------------------------------------- */
static void grow_aux(Sema *S) {
  int cap = S->cap_aux ? S->cap_aux * 2 : 256;
  const char **vn = arena_alloc(S->a, sizeof *vn * (size_t)cap);
  int64_t *bd = arena_alloc(S->a, sizeof *bd * (size_t)cap), *pb = arena_alloc(S->a, sizeof *pb * (size_t)cap);
  if (S->cap_aux) {
    memcpy(vn, S->varname, sizeof *vn * (size_t)S->cap_aux);
    memcpy(bd, S->bound, sizeof *bd * (size_t)S->cap_aux);
    memcpy(pb, S->part_bound, sizeof *pb * (size_t)S->cap_aux);
  }
  S->varname = vn;
  S->bound = bd;
  S->part_bound = pb;
  S->cap_aux = cap;
}

Op *sema_op(Sema *S, OpKind k, int nin, const int *in, Loc loc) {
  if (S->stop) return NULL;
  if (S->g->nops >= SEMA_MAX_OPS) {
    sema_err(S, loc, "the model is too large: more than %d operations", SEMA_MAX_OPS);
    S->stop = true;
    return NULL;
  }
  if (S->g->nops >= S->cap_aux) grow_aux(S);
  Op *op = graph_add(S->g, k, nin, in, loc);
  op->seg = S->seg;
  op->site = sema_site(S);
  OpClass c = op_info[k].cls;
  if (c == OPC_L || c == OPC_C) return op;
  op->recompute = S->place.recompute;
  if (S->place.stage >= 0) {
    op->stage = S->place.stage;
    op->stage_loc = S->place.stage_loc;
    return op;
  }
  for (int i = 0; i < nin; i++) {
    Op *x = S->g->ops[in[i]];
    if (x->stage > op->stage) {
      op->stage = x->stage;
      op->stage_loc = x->stage_loc;
    }
  }
  return op;
}

Value vtensor(Sema *S, Op *op) {
  if (!op) return verr();
  return (Value){.kind = V_TENSOR, .op = op->id, .loc = op->loc};
}

Op *sema_opv(Sema *S, Value v) { return S->g->ops[v.op]; }

bool sema_check_shape(Sema *S, Shape *s, Loc loc) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) {
    if (s->d[i] <= 0) {
      sema_err(S, loc, "dimension %d is %lld; dimensions must be positive", i, (long long)s->d[i]);
      return false;
    }
    if (s->d[i] > SEMA_MAX_NUMEL || n > SEMA_MAX_NUMEL / s->d[i]) {
      sema_err(S, loc, "tensor too large: more than 2^40 elements");
      return false;
    }
    n *= s->d[i];
  }
  return true;
}

int sema_norm_axis(Sema *S, int64_t axis, int rank, Loc loc) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    sema_err(S, loc, "axis %lld is out of range for a tensor of rank %d", (long long)axis, rank);
    return -1;
  }
  return (int)a;
}

/* A rank-0 tensor takes axis 0 or -1 as if it had one axis of size 1 (torch wraps a 0-d
 * tensor's dim so): true when x is such a tensor and axis one of those. */
bool sema_scalar_axis(const Op *xi, int64_t axis) { return xi->shape.rank == 0 && (axis == 0 || axis == -1); }

/* A 0-d tensor as a row of one element, [1]. */
Value sema_scalar_as_row(Sema *S, Value x, Loc loc) { return sema_reshape(S, x, (Shape){.rank = 1, .d = {1}}, loc); }

const char *sema_shape_str(Sema *S, const Op *op) {
  char buf[160];
  return arena_strdup(S->a, shape_str(&op->shape, buf, sizeof buf));
}

void sema_note_made(Sema *S, Value v) {
  if (v.kind != V_TENSOR) return;
  Op *op = sema_opv(S, v);
  const char *name = S->varname[op->id] ? S->varname[op->id] : op->name;
  /* a value a stdlib def made, read by the user's code: the user's call made it (pass 71:
     the note showed nn.mpl's line) */
  bool in_user = S->depth == 0 || !S->frames[S->depth - 1].stdlib;
  Loc at = in_user && sema_in_stdlib(op->loc) ? op_user_loc(op) : op->loc;
  if (name) sema_note(S, at, "'%s' %s%s was made here", name, dtype_name(op->dtype), sema_shape_str(S, op));
  else sema_note(S, at, "%s%s was made here", dtype_name(op->dtype), sema_shape_str(S, op));
}

void sema_note_operands(Sema *S, Value a, Value b) {
  sema_note_made(S, a);
  if (b.kind == V_TENSOR && a.kind == V_TENSOR && sema_opv(S, b)->loc.line == sema_opv(S, a)->loc.line &&
      sema_opv(S, b)->loc.col == sema_opv(S, a)->loc.col && sema_opv(S, b)->loc.file == sema_opv(S, a)->loc.file)
    return;
  sema_note_made(S, b);
}

/* A compile-time value as a rank-0 tensor of dtype dt. */
Value sema_scalar(Sema *S, Value c, DType dt, Loc loc) {
  if (c.kind == V_TENSOR || c.kind == V_ERR) return c;
  if (c.kind == V_BOOL ? dt != DT_BOOL : !is_num(c) || dt == DT_BOOL || (c.kind == V_FLOAT && !dtype_is_float(dt))) {
    sema_err(S, c.loc.line ? c.loc : loc, "%s cannot be used with %s tensors", sema_value_desc(S, c), dtype_name(dt));
    return verr();
  }
  if (dt == DT_I32 && c.kind == V_INT && (c.i < INT32_MIN || c.i > INT32_MAX)) {
    sema_err(S, c.loc.line ? c.loc : loc, "%lld does not fit in i32 [-2147483648, 2147483647] (the tensor's type)",
             (long long)c.i);
    return verr();
  }
  Op *op = sema_op(S, OP_FULL, 0, NULL, c.loc.line ? c.loc : loc);
  if (!op) return verr();
  op->dtype = dt;
  op->value = c.kind == V_BOOL ? (double)c.i : num_of(c);
  return vtensor(S, op);
}

Value sema_unary(Sema *S, OpKind k, Value x, Loc loc) {
  if (x.kind == V_ERR || (x.kind == V_NONE && k == OP_NEG)) return x; /* -bias: absent too */
  if (x.kind == V_NONE) { /* exp(bias) of an absent bias would be no term at all: never silently */
    sema_err(S, loc, "the optional param '%s' is absent; it can only be used in + - * / or @, not in %s",
             x.s ? x.s : "?", op_name(k));
    return verr();
  }
  if (x.kind != V_TENSOR) {
    sema_err(S, loc, "'%s' needs a tensor, not %s", op_name(k), sema_value_desc(S, x));
    return verr();
  }
  Op *xi = sema_opv(S, x);
  bool ok = k == OP_NOT ? xi->dtype == DT_BOOL
          : (k == OP_NEG || k == OP_ABS || k == OP_RELU) ? xi->dtype != DT_BOOL
          : dtype_is_float(xi->dtype);
  if (!ok) {
    const char *dn = dtype_name(xi->dtype);
    sema_err(S, loc, "'%s' cannot apply to %s %s tensor%s", op_name(k), dn[0] == 'f' || dn[0] == 'i' ? "an" : "a", dn,
             dtype_is_float(xi->dtype) || k == OP_NOT ? "" : " (cast it: cast(x, f32))");
    sema_note_made(S, x);
    return verr();
  }
  Op *op = sema_op(S, k, 1, &x.op, loc);
  if (!op) return verr();
  op->dtype = xi->dtype;
  op->shape = xi->shape;
  return vtensor(S, op);
}

static bool is_logic(OpKind k) { return k == OP_AND || k == OP_OR; }

/* Elementwise binary op with NumPy broadcasting and a dtype check. */
Value sema_binary(Sema *S, OpKind k, Value a, Value b, Loc loc, const char *opname) {
  if (a.kind == V_ERR || b.kind == V_ERR) return verr();
  if (a.kind != V_TENSOR) a = sema_scalar(S, a, sema_opv(S, b)->dtype, loc);
  else if (b.kind != V_TENSOR) b = sema_scalar(S, b, sema_opv(S, a)->dtype, loc);
  if (a.kind == V_ERR || b.kind == V_ERR) return verr();
  Op *x = sema_opv(S, a), *y = sema_opv(S, b);
  if (x->dtype != y->dtype) {
    sema_err(S, loc, "'%s' mixes element types %s and %s (use cast)", opname, dtype_name(x->dtype), dtype_name(y->dtype));
    sema_note_operands(S, a, b);
    return verr();
  }
  bool want_bool = is_logic(k);
  if (want_bool != (x->dtype == DT_BOOL) && !(op_is_compare(k) && (k == OP_EQ || k == OP_NE))) {
    sema_err(S, loc, "'%s' cannot apply to %s tensors", opname, dtype_name(x->dtype));
    sema_note_operands(S, a, b);
    return verr();
  }
  Shape s;
  if (!shape_broadcast(&x->shape, &y->shape, &s)) {
    /* one side a reduction that dropped its axis, which kept would broadcast: the hint
       (pass 71: x - mean(x, axis = -1) said only that the shapes do not broadcast) */
    const char *hint = "";
    for (int side = 0; side < 2 && !*hint; side++) {
      const Op *r = side ? y : x, *o = side ? x : y;
      if ((r->kind != OP_SUM && r->kind != OP_MEAN && r->kind != OP_AMAX) || r->keepdims || r->axis == AXIS_ALL ||
          r->shape.rank + 1 > MPL_MAX_RANK)
        continue;
      Shape kept = {0}, t;
      for (int i = 0, j = 0; i <= r->shape.rank; i++) kept.d[kept.rank++] = i == r->axis ? 1 : r->shape.d[j++];
      if (shape_broadcast(&o->shape, &kept, &t)) hint = " (the reduction dropped its axis: keepdims = true keeps it)";
    }
    sema_err(S, loc, "shapes %s and %s do not broadcast in '%s'%s", sema_shape_str(S, x), sema_shape_str(S, y), opname, hint);
    sema_note_operands(S, a, b);
    return verr();
  }
  if (!sema_check_shape(S, &s, loc)) return verr();
  int in[2] = {a.op, b.op};
  Op *op = sema_op(S, k, 2, in, loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = op_is_compare(k) ? DT_BOOL : x->dtype;
  return vtensor(S, op);
}

Value sema_reshape(Sema *S, Value x, Shape s, Loc loc) {
  Op *op = sema_op(S, OP_RESHAPE, 1, &x.op, loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = sema_opv(S, x)->dtype;
  return vtensor(S, op);
}

/* a @ b, batched with broadcasting; ta/tb: the operand is stored transposed.
 * A 1-D operand is a row (left) or a column (right), as in NumPy. */
Value sema_matmul(Sema *S, Value a, Value b, bool ta, bool tb, Loc loc) {
  if (a.kind == V_ERR || b.kind == V_ERR) return verr();
  if (a.kind != V_TENSOR || b.kind != V_TENSOR) {
    sema_err(S, loc, "'@' needs two tensors, not %s and %s", sema_value_desc(S, a), sema_value_desc(S, b));
    return verr();
  }
  Op *x = sema_opv(S, a), *y = sema_opv(S, b);
  if (x->dtype != y->dtype || !dtype_is_float(x->dtype)) {
    sema_err(S, loc, "'@' needs two tensors of one float type, not %s and %s", dtype_name(x->dtype), dtype_name(y->dtype));
    sema_note_operands(S, a, b);
    return verr();
  }
  if (x->shape.rank == 0 || y->shape.rank == 0) {
    sema_err(S, loc, "'@' cannot apply to a scalar (shapes %s and %s)", sema_shape_str(S, x), sema_shape_str(S, y));
    sema_note_operands(S, a, b);
    return verr();
  }
  bool va = x->shape.rank == 1, vb = y->shape.rank == 1;
  Shape xs = x->shape, ys = y->shape;
  if (va) { xs = (Shape){2, {1, xs.d[0]}}; ta = false; }
  if (vb) { ys = (Shape){2, {ys.d[0], 1}}; tb = false; }
  int64_t m = xs.d[xs.rank - (ta ? 1 : 2)], k1 = xs.d[xs.rank - (ta ? 2 : 1)];
  int64_t k2 = ys.d[ys.rank - (tb ? 1 : 2)], n = ys.d[ys.rank - (tb ? 2 : 1)];
  Shape ba = xs, bb = ys, bs;
  ba.rank -= 2;
  bb.rank -= 2;
  if (k1 != k2 || !shape_broadcast(&ba, &bb, &bs) || bs.rank + 2 > MPL_MAX_RANK) {
    /* PyTorch's nn.Linear keeps its weight [out, in]; a product here reads [in, out] */
    const char *hint = !ta && !tb && !vb && k1 == n && k1 != k2 ? " (a weight here is [in, out], not PyTorch's [out, in]: "
                                                                  "x @ transpose(w, -2, -1) reads it so)" : "";
    sema_err(S, loc, "shapes %s%s and %s%s do not match in '@'%s", sema_shape_str(S, x), ta ? " (transposed)" : "", sema_shape_str(S, y), tb ? " (transposed)" : "", hint);
    sema_note_operands(S, a, b);
    return verr();
  }
  if (va) a = sema_reshape(S, a, xs, loc);
  if (vb) b = sema_reshape(S, b, ys, loc);
  if (a.kind == V_ERR || b.kind == V_ERR) return verr();
  Shape out = bs;
  out.d[out.rank++] = m;
  out.d[out.rank++] = n;
  if (!sema_check_shape(S, &out, loc)) return verr();
  int in[2] = {a.op, b.op};
  Op *op = sema_op(S, OP_MATMUL, 2, in, loc);
  if (!op) return verr();
  op->shape = out;
  op->dtype = x->dtype;
  op->ta = ta;
  op->tb = tb;
  Value r = vtensor(S, op);
  if (va || vb) {
    Shape sq = bs;
    if (!va) sq.d[sq.rank++] = m;
    if (!vb) sq.d[sq.rank++] = n;
    r = sema_reshape(S, r, sq, loc);
  }
  return r;
}

Value sema_transpose(Sema *S, Value x, Value i, Value j, Loc loc) {
  if (x.kind == V_ERR || i.kind == V_ERR || j.kind == V_ERR) return verr();
  if (x.kind != V_TENSOR) {
    sema_err(S, loc, "transpose needs a tensor, not %s", sema_value_desc(S, x));
    return verr();
  }
  if (i.kind != V_INT || j.kind != V_INT) {
    sema_err(S, loc, "transpose's axes must be compile-time ints");
    return verr();
  }
  Op *xi = sema_opv(S, x);
  int a = sema_norm_axis(S, i.i, xi->shape.rank, loc), b = sema_norm_axis(S, j.i, xi->shape.rank, loc);
  if (a < 0 || b < 0) return verr();
  if (a == b) return x;
  Op *op = sema_op(S, OP_TRANSPOSE, 1, &x.op, loc);
  if (!op) return verr();
  op->dtype = xi->dtype;
  op->shape = xi->shape;
  op->shape.d[a] = xi->shape.d[b];
  op->shape.d[b] = xi->shape.d[a];
  op->axis = a < b ? a : b;
  op->axis2 = a < b ? b : a;
  return vtensor(S, op);
}

Value sema_slice(Sema *S, Value x, int axis, int64_t begin, int64_t end, Loc loc) {
  Op *xi = sema_opv(S, x);
  Op *op = sema_op(S, OP_SLICE, 1, &x.op, loc);
  if (!op) return verr();
  op->dtype = xi->dtype;
  op->shape = xi->shape;
  op->shape.d[axis] = end - begin;
  op->axis = axis;
  op->begin = begin;
  op->end = end;
  return vtensor(S, op);
}

/* The op whose every element v's elements are (through reshapes, transposes, broadcasts and
 * zero pads): an input's bound holds for all its tokens only then (pass 83: an embedding of
 * idx[:, 0] bounded the whole of idx, and a file whose other columns held larger tokens was
 * refused; a slice's values get a run-time check instead). */
static const Op *whole_source(Sema *S, const Op *op) {
  while (op->kind == OP_RESHAPE || op->kind == OP_TRANSPOSE || op->kind == OP_EXPAND || op->kind == OP_PAD)
    op = S->g->ops[op->in[0]];
  return op;
}

/* The op a value of an i32 input reaches through shape ops: record its bound, for the whole
 * input (a token file is checked against it) or, through a slice, for part of it (synthetic
 * data draws there, pass 84, as it did before pass 83's whole_source). */
void sema_note_bound(Sema *S, Value v, int64_t bound) {
  if (v.kind != V_TENSOR) return;
  const Op *op = whole_source(S, sema_opv(S, v));
  int64_t *at = S->bound;
  if (op->kind != OP_INPUT) {
    while (op_info[op->kind].cls == OPC_S && op->nin == 1) op = S->g->ops[op->in[0]];
    at = S->part_bound;
  }
  if (op->kind != OP_INPUT || op->dtype != DT_I32) return;
  if (!at[op->id] || bound < at[op->id]) at[op->id] = bound;
}

/* ---- v2 ops with kernels of their own (issue 13, item 1) ------------------------------- */

/* A CHECK of i32 value v for the op `guarded` (GATHER, EMBEDDING, CROSS_ENTROPY: indices or
 * targets in [0, bound); REM, DIV: no zero divisor): the runtime stops with a message naming the
 * op and loc when the count is not 0.
 * It runs where v is made or, for a leaf v, on the guarded op's stage (a check has no
 * users, so its stage is not found from them). */
static Op *make_check(Sema *S, int v, OpKind of, int64_t bound, Loc loc) {
  Op *c = sema_op(S, OP_CHECK, 1, &v, loc);
  if (!c) return NULL;
  c->shape = (Shape){0};
  c->dtype = DT_I32;
  c->key = of;
  c->value = (double)bound;
  return c;
}

/* A check on the guarded op's stage where v is a leaf (a check has no users, so its stage is
 * not found from them). */
void sema_guard_stage(Op *check, const Op *guarded) {
  if (check && check->stage < 0 && guarded->stage >= 0) check->stage = guarded->stage, check->stage_loc = guarded->stage_loc;
}

static void add_check(Sema *S, int v, const Op *guarded, int64_t bound, Loc loc) {
  sema_guard_stage(make_check(S, v, guarded->kind, bound, loc), guarded);
}

/* The exclusive bound of an i32 value known from the op that makes it (0: unknown). */
static int64_t index_bound(Sema *S, const Op *idx) {
  if (idx->kind == OP_ARANGE) return idx->shape.d[0];
  if (idx->kind == OP_TOPK || idx->kind == OP_ARGMAX) return S->g->ops[idx->in[0]]->shape.d[idx->axis];
  if (idx->kind == OP_REM && idx->dtype == DT_I32) { /* x % c, c > 0: in [0, c) (torch.remainder) */
    const Op *d = S->g->ops[idx->in[1]];
    if (d->kind == OP_FULL && d->value > 0) return (int64_t)d->value;
  }
  return 0;
}

/* The i32 value idx that an op of kind `of` will read (EMBEDDING: its rows; CROSS_ENTROPY:
 * its classes) must lie in [0, bound), as in PyTorch: an arange longer than bound is an
 * error now; the tokens of a data input are checked as they are read (sema_note_bound); any
 * other values get a run-time CHECK, made before the op so that it runs first, then given
 * the op's stage by sema_guard_stage. False after an error. */
bool sema_guard_index(Sema *S, Value idx, OpKind of, int64_t bound, Loc loc, Op **check) {
  const Op *ii = sema_opv(S, idx);
  int64_t known = index_bound(S, ii);
  *check = NULL;
  if (ii->kind == OP_ARANGE && known > bound) {
    sema_err(S, loc, "%s: its %s (an arange) run to %lld, past its %lld %s", op_name(of),
             of == OP_EMBEDDING ? "indices" : "targets", (long long)known - 1, (long long)bound,
             of == OP_EMBEDDING ? "rows" : "classes");
    sema_note_made(S, idx);
    return false;
  }
  if (known > 0 && known <= bound) return true;
  if (whole_source(S, ii)->kind != OP_INPUT) *check = make_check(S, idx.op, of, bound, loc);
  return true;
}

/* a % b (torch.remainder) and a / b on tensors. On i32 (where / truncates toward zero, as
 * torch.div(rounding_mode = 'trunc')), a divisor that is a compile-time 0 is an error; one
 * computed at run time gets a CHECK (the kernels give 0 for x % 0 and x / 0, and the run
 * stops with the check's message, as PyTorch raises ZeroDivisionError). */
static Value int_division(Sema *S, OpKind k, Value a, Value b, Loc loc, const char *sym) {
  Value r = sema_binary(S, k, a, b, loc, sym);
  if (r.kind != V_TENSOR || sema_opv(S, r)->dtype != DT_I32) return r;
  const Op *d = S->g->ops[sema_opv(S, r)->in[1]];
  if (d->kind == OP_FULL && d->value == 0) {
    sema_err(S, loc, "'%s' on i32 tensors: the divisor is 0", sym);
    return verr();
  }
  if (d->kind != OP_FULL) add_check(S, d->id, sema_opv(S, r), 0, loc);
  return r;
}
Value sema_rem(Sema *S, Value a, Value b, Loc loc) { return int_division(S, OP_REM, a, b, loc, "%"); }
Value sema_div(Sema *S, Value a, Value b, Loc loc) { return int_division(S, OP_DIV, a, b, loc, "/"); }

/* x's dtype is a number type: f32, i32, bf16 or f16 (the ordering ops: argmax, topk,
 * cumsum; a half type is widened to f32 for them, as PyTorch orders and sums it). */
static bool number_tensor(Sema *S, Value x, const char *fn, Loc loc) {
  DType t = sema_opv(S, x)->dtype;
  if (t == DT_F32 || t == DT_I32 || t == DT_BF16 || t == DT_F16) return true;
  sema_err(S, loc, "%s needs a number tensor (f32, bf16, f16, i32), not %s", fn, dtype_name(t));
  sema_note_made(S, x);
  return false;
}

Value sema_cast_to(Sema *S, Value x, DType t, Loc loc) {
  const Op *xi = sema_opv(S, x);
  if (xi->dtype == t) return x;
  Shape sh = xi->shape;
  Op *op = sema_op(S, OP_CAST, 1, &x.op, loc);
  if (!op) return verr();
  op->shape = sh;
  op->dtype = t;
  return vtensor(S, op);
}

static bool half_type(DType t) { return t == DT_BF16 || t == DT_F16; }

/* An op of kind k on x along axis (already normalised), of shape s and dtype t. */
static Value axis_op(Sema *S, OpKind k, Value x, int axis, Shape s, DType t, Loc loc) {
  Op *op = sema_op(S, k, 1, &x.op, loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = t;
  op->axis = axis;
  return vtensor(S, op);
}

Value sema_argmax(Sema *S, Value x, int64_t axis, bool keep, Loc loc, Loc axis_loc) {
  if (!number_tensor(S, x, "argmax", loc)) return verr();
  if (half_type(sema_opv(S, x)->dtype) && (x = sema_cast_to(S, x, DT_F32, loc)).kind == V_ERR) return x; /* exact */
  const Op *xi = sema_opv(S, x);
  if (sema_scalar_axis(xi, axis)) { /* torch.argmax of a 0-d tensor: 0 */
    if ((x = sema_scalar_as_row(S, x, loc)).kind == V_ERR) return x;
    xi = sema_opv(S, x);
    axis = 0, keep = false;
  }
  int ax = sema_norm_axis(S, axis, xi->shape.rank, axis_loc);
  if (ax < 0) return verr();
  Shape s = {0};
  for (int i = 0; i < xi->shape.rank; i++)
    if (i != ax) s.d[s.rank++] = xi->shape.d[i];
    else if (keep) s.d[s.rank++] = 1;
  Value r = axis_op(S, OP_ARGMAX, x, ax, s, DT_I32, loc);
  if (r.kind == V_TENSOR) sema_opv(S, r)->keepdims = keep;
  return r;
}

Value sema_cumsum(Sema *S, Value x, int64_t axis, Loc loc, Loc axis_loc) {
  if (!number_tensor(S, x, "cumsum", loc)) return verr();
  DType t = sema_opv(S, x)->dtype;
  if (half_type(t)) { /* summed in f32, each result rounded to x's type (torch's cumsum of a half type) */
    Value w = sema_cast_to(S, x, DT_F32, loc);
    if (w.kind == V_ERR) return w;
    Value r = sema_cumsum(S, w, axis, loc, axis_loc);
    return r.kind == V_ERR ? r : sema_cast_to(S, r, t, loc);
  }
  const Op *xi = sema_opv(S, x);
  if (sema_scalar_axis(xi, axis)) return x; /* a sum of one */
  int ax = sema_norm_axis(S, axis, xi->shape.rank, axis_loc);
  if (ax < 0) return verr();
  return axis_op(S, OP_CUMSUM, x, ax, xi->shape, xi->dtype, loc);
}

/* GATHER(x, idx) along axis (normalised): the shape of idx, the dtype of x. */
static Value gather_op(Sema *S, Value x, Value idx, int axis, Loc loc) {
  int in[2] = {x.op, idx.op};
  Op *op = sema_op(S, OP_GATHER, 2, in, loc);
  if (!op) return verr();
  op->shape = sema_opv(S, idx)->shape;
  op->dtype = sema_opv(S, x)->dtype;
  op->axis = axis;
  return vtensor(S, op);
}

/* topk(x, k, axis): (values, indices); the indices are a TOPK op, the values a GATHER of
 * x by them (so the gradient flows through the values only, as GATHER's). */
Value sema_topk(Sema *S, Value x, int64_t k, int64_t axis, Loc loc, Loc k_loc, Loc axis_loc) {
  if (!number_tensor(S, x, "topk", loc)) return verr();
  const Op *xi = sema_opv(S, x);
  int ax = sema_norm_axis(S, axis, xi->shape.rank, axis_loc);
  if (ax < 0) return verr();
  if (k <= 0 || k > xi->shape.d[ax]) {
    sema_err(S, k_loc, "topk: k = %lld is not in [1, %lld], the size of axis %d of %s", (long long)k,
             (long long)xi->shape.d[ax], ax, sema_shape_str(S, xi));
    sema_note_made(S, x);
    return verr();
  }
  Shape s = xi->shape;
  s.d[ax] = k;
  Value key = x; /* a half type is ordered by its (exact) f32 values; the values gathered from x */
  if (half_type(xi->dtype) && (key = sema_cast_to(S, x, DT_F32, loc)).kind == V_ERR) return key;
  Value idx = axis_op(S, OP_TOPK, key, ax, s, DT_I32, loc);
  if (idx.kind == V_ERR) return idx;
  Value vals = gather_op(S, x, idx, ax, loc);
  if (vals.kind == V_ERR) return vals;
  Value t = {.kind = V_TUPLE, .n = 2, .loc = loc};
  t.items = arena_alloc(S->a, sizeof(Value) * 2);
  t.items[0] = vals, t.items[1] = idx;
  return t;
}


/* gather(x, idx, axis): torch.gather. idx is i32 of x's rank, no larger than x on the other
 * axes; its values are checked at run time unless they are known to be in range. */
Value sema_gather(Sema *S, Value x, Value idx, int64_t axis, Loc loc, Loc axis_loc) {
  const Op *xi = sema_opv(S, x), *ii = sema_opv(S, idx);
  if (ii->dtype != DT_I32 || ii->shape.rank != xi->shape.rank) {
    sema_err(S, loc, "gather needs i32 indices of the rank of x (%d), not %s%s", xi->shape.rank, dtype_name(ii->dtype),
             sema_shape_str(S, ii));
    sema_note_operands(S, x, idx);
    return verr();
  }
  int ax = sema_norm_axis(S, axis, xi->shape.rank, axis_loc);
  if (ax < 0) return verr();
  for (int i = 0; i < xi->shape.rank; i++)
    if (i != ax && ii->shape.d[i] > xi->shape.d[i]) {
      sema_err(S, loc, "gather along axis %d: indices %s are larger than x %s on axis %d", ax, sema_shape_str(S, ii),
               sema_shape_str(S, xi), i);
      sema_note_operands(S, x, idx);
      return verr();
    }
  int64_t n = xi->shape.d[ax], known = index_bound(S, ii);
  sema_note_bound(S, idx, n);
  Value r = gather_op(S, x, idx, ax, loc);
  if (r.kind == V_TENSOR && !(known > 0 && known <= n)) add_check(S, idx.op, sema_opv(S, r), n, loc);
  return r;
}

/* one_hot(idx, n): f32 [..., n]; an index outside [0, n) gives a row of zeros. */
Value sema_one_hot(Sema *S, Value idx, int64_t n, Loc loc, Loc n_loc) {
  const Op *ii = sema_opv(S, idx);
  if (ii->dtype != DT_I32) {
    sema_err(S, loc, "one_hot needs i32 indices, not %s", dtype_name(ii->dtype));
    sema_note_made(S, idx);
    return verr();
  }
  if (n <= 0) {
    sema_err(S, n_loc, "one_hot: the number of classes must be positive, not %lld", (long long)n);
    return verr();
  }
  Shape s = ii->shape;
  if (s.rank == MPL_MAX_RANK) { sema_err(S, loc, "more than %d dimensions", MPL_MAX_RANK); return verr(); }
  s.d[s.rank++] = n;
  if (!sema_check_shape(S, &s, loc)) return verr();
  sema_note_bound(S, idx, n);
  Op *op = sema_op(S, OP_ONE_HOT, 1, &idx.op, loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = DT_F32;
  return vtensor(S, op);
}

/* The operands of conv2d: x [N, C, H, W], w [O, C, kh, kw] of one float type; false after
 * an error. */
static bool conv_operands(Sema *S, Value x, Value w, Loc loc) {
  const Op *xi = sema_opv(S, x), *wi = sema_opv(S, w);
  if (xi->shape.rank != 4 || wi->shape.rank != 4 || xi->dtype != wi->dtype || !dtype_is_float(xi->dtype)) {
    sema_err(S, loc, "conv2d needs x [N, C, H, W] and w [O, C, kh, kw] of one float type, not %s%s and %s%s",
             dtype_name(xi->dtype), sema_shape_str(S, xi), dtype_name(wi->dtype), sema_shape_str(S, wi));
    sema_note_operands(S, x, w);
    return false;
  }
  if (xi->shape.d[1] != wi->shape.d[1]) {
    sema_err(S, loc, "conv2d: x %s has %lld channels, but w %s expects %lld", sema_shape_str(S, xi),
             (long long)xi->shape.d[1], sema_shape_str(S, wi), (long long)wi->shape.d[1]);
    sema_note_operands(S, x, w);
    return false;
  }
  return true;
}

/* conv2d(x, w, stride, padding), as torch.nn.functional.conv2d without bias: the patches
 * (IM2COL, [N, C*kh*kw, Ho*Wo]) times w as [O, C*kh*kw], one product per image, reshaped
 * to [N, O, Ho, Wo]. */
Value sema_conv2d(Sema *S, Value x, Value w, int64_t stride, int64_t pad, Loc loc) {
  if (!conv_operands(S, x, w, loc)) return verr();
  const Op *xi = sema_opv(S, x), *wi = sema_opv(S, w);
  int64_t N = xi->shape.d[0], C = xi->shape.d[1], H = xi->shape.d[2], W = xi->shape.d[3];
  int64_t O = wi->shape.d[0], kh = wi->shape.d[2], kw = wi->shape.d[3];
  if (kh > INT32_MAX || kw > INT32_MAX) {
    sema_err(S, loc, "conv2d: a %lldx%lld kernel is too large", (long long)kh, (long long)kw);
    return verr();
  }
  if (stride < 1 || pad < 0 || stride > INT32_MAX || pad > INT32_MAX) {
    sema_err(S, loc, "conv2d: stride must be from 1 and padding from 0, each to %d, not %lld and %lld", INT32_MAX,
             (long long)stride, (long long)pad);
    return verr();
  }
  if (H + 2 * pad > SEMA_MAX_NUMEL / (W + 2 * pad)) {
    sema_err(S, loc, "conv2d: the padded input is too large (more than 2^40 places)");
    return verr();
  }
  int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  if (H + 2 * pad < kh || W + 2 * pad < kw) {
    sema_err(S, loc, "conv2d: the %lldx%lld kernel does not fit in the %lldx%lld input with padding %lld: no output",
             (long long)kh, (long long)kw, (long long)H, (long long)W, (long long)pad);
    sema_note_operands(S, x, w);
    return verr();
  }
  Shape cs = {3, {N, C * kh * kw, Ho * Wo}};
  if (!sema_check_shape(S, &cs, loc)) return verr();
  Op *cols = sema_op(S, OP_IM2COL, 1, &x.op, loc);
  if (!cols) return verr();
  cols->shape = cs;
  cols->dtype = xi->dtype;
  cols->axis = (int)kh, cols->axis2 = (int)kw, cols->begin = stride, cols->end = pad;
  Value w2 = sema_reshape(S, w, (Shape){2, {O, C * kh * kw}}, loc);
  Value y = sema_matmul(S, w2, vtensor(S, cols), false, false, loc);
  if (y.kind == V_ERR) return y;
  return sema_reshape(S, y, (Shape){4, {N, O, Ho, Wo}}, loc);
}
