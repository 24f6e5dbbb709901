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
  int64_t *bd = arena_alloc(S->a, sizeof *bd * (size_t)cap);
  if (S->cap_aux) {
    memcpy(vn, S->varname, sizeof *vn * (size_t)S->cap_aux);
    memcpy(bd, S->bound, sizeof *bd * (size_t)S->cap_aux);
  }
  S->varname = vn;
  S->bound = bd;
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

const char *sema_shape_str(Sema *S, const Op *op) {
  char buf[160];
  return arena_strdup(S->a, shape_str(&op->shape, buf, sizeof buf));
}

void sema_note_made(Sema *S, Value v) {
  if (v.kind != V_TENSOR) return;
  Op *op = sema_opv(S, v);
  const char *name = S->varname[op->id] ? S->varname[op->id] : op->name;
  if (name) sema_note(S, op->loc, "'%s' %s%s was made here", name, dtype_name(op->dtype), sema_shape_str(S, op));
  else sema_note(S, op->loc, "%s%s was made here", dtype_name(op->dtype), sema_shape_str(S, op));
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
  Op *op = sema_op(S, OP_FULL, 0, NULL, c.loc.line ? c.loc : loc);
  if (!op) return verr();
  op->dtype = dt;
  op->value = c.kind == V_BOOL ? (double)c.i : num_of(c);
  return vtensor(S, op);
}

Value sema_unary(Sema *S, OpKind k, Value x, Loc loc) {
  if (x.kind == V_ERR || x.kind == V_NONE) return x;
  if (x.kind != V_TENSOR) {
    sema_err(S, loc, "'%s' needs a tensor, not %s", op_name(k), sema_value_desc(S, x));
    return verr();
  }
  Op *xi = sema_opv(S, x);
  bool ok = k == OP_NOT ? xi->dtype == DT_BOOL
          : (k == OP_NEG || k == OP_ABS || k == OP_RELU) ? xi->dtype != DT_BOOL
          : dtype_is_float(xi->dtype);
  if (!ok) {
    sema_err(S, loc, "'%s' cannot apply to a %s tensor", op_name(k), dtype_name(xi->dtype));
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
static bool is_cmp_op(OpKind k) { return k >= OP_EQ && k <= OP_GE; }

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
  if (want_bool != (x->dtype == DT_BOOL) && !(is_cmp_op(k) && (k == OP_EQ || k == OP_NE))) {
    sema_err(S, loc, "'%s' cannot apply to %s tensors", opname, dtype_name(x->dtype));
    sema_note_operands(S, a, b);
    return verr();
  }
  Shape s;
  if (!shape_broadcast(&x->shape, &y->shape, &s)) {
    sema_err(S, loc, "shapes %s and %s do not broadcast in '%s'", sema_shape_str(S, x), sema_shape_str(S, y), opname);
    sema_note_operands(S, a, b);
    return verr();
  }
  if (!sema_check_shape(S, &s, loc)) return verr();
  int in[2] = {a.op, b.op};
  Op *op = sema_op(S, k, 2, in, loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = is_cmp_op(k) ? DT_BOOL : x->dtype;
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
    sema_err(S, loc, "shapes %s%s and %s%s do not match in '@'", sema_shape_str(S, x), ta ? " (transposed)" : "", sema_shape_str(S, y), tb ? " (transposed)" : "");
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

/* The op a value of an i32 input reaches through shape ops: record its bound. */
void sema_note_bound(Sema *S, Value v, int64_t bound) {
  if (v.kind != V_TENSOR) return;
  Op *op = sema_opv(S, v);
  while (op_info[op->kind].cls == OPC_S && op->nin == 1) op = S->g->ops[op->in[0]];
  if (op->kind != OP_INPUT || op->dtype != DT_I32) return;
  if (!S->bound[op->id] || bound < S->bound[op->id]) S->bound[op->id] = bound;
}
