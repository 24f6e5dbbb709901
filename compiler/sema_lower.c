/*
 * sema_lower.c — the built-ins of contract v2 that the front end lowers to graph ops
 * that already exist, so that each gets its gradient, its kernels (CPU and CUDA), its
 * tensor-parallel layouts and the reference evaluator from those ops (issue 13):
 *
 *   repeat(x, n, axis)   reshape [.., D, 1, ..] -> expand [.., D, n, ..] -> reshape [.., D*n, ..]
 *                        (torch.repeat_interleave: each element n times in a row)
 *   expand(x, d0, ...)   one EXPAND; only axes of size 1 (or new leading axes) grow
 *   stack(xs..., axis)   a reshape per input (a new axis of size 1), then one CONCAT
 *   sdpa(q, k, v, causal = false, scale = 1/sqrt(hs))
 *                        grouped-query attention without copying k and v per query
 *                        head: q [..., H, T, hs] is viewed as [..., Hkv, G, T, hs]
 *                        (G = H / Hkv) and multiplied by k [..., Hkv, 1, hs, S] with the
 *                        broadcasting batched product (query head h meets kv head
 *                        h / G); scale, the causal mask (query i sees keys j <= i, top-left
 *                        aligned as torch's is_causal), softmax over the keys in f32, the
 *                        product with v [..., Hkv, 1, S, hs], and the view back to
 *                        [..., H, T, hs]. With G = 1 there are no views.
 *                        That is the lowered form (mplc --no-fused-sdpa, q, k, v of
 *                        another type than f32, and head sizes past MPL_SDPA_MAX_HEAD). By default an f32 sdpa is one SDPA op
 *                        and its RESULT, the log-sum-exp of each query row (issue 14): a
 *                        step of its own that runs flash attention's tiles (no T x S
 *                        buffer); autodiff gives it SDPA_GRAD, refeval.c its float64
 *                        meaning, shard.c its head split.
 *
 * The table LOWERED is looked up by sema_builtin (sema_builtin.c) after its own
 * BUILTINS; every op made here carries the call's location. The tp layouts follow
 * from shard.c's rules for reshape, expand, concat, matmul, softmax and where: a split
 * of the head axis survives sdpa when H and Hkv both divide by tp.
 */
#include "sema_int.h"

#include <math.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static Value tensor_of(Sema *S, Scope *sc, Node *e, const char *fn) {
  Value v = sema_eval(S, sc, e);
  if (v.kind == V_ERR || v.kind == V_TENSOR) return v;
  sema_err(S, e->loc, "%s needs a tensor here, not %s", fn, sema_value_desc(S, v));
  return verr();
}

static Value expand_to(Sema *S, Value x, Shape s, Loc loc) {
  if (shape_eq(&sema_opv(S, x)->shape, &s)) return x;
  Op *op = sema_op(S, OP_EXPAND, 1, &x.op, loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = sema_opv(S, x)->dtype;
  return vtensor(S, op);
}

static Value reshape_to(Sema *S, Value x, Shape s, Loc loc) {
  if (x.kind == V_ERR) return x;
  if (shape_eq(&sema_opv(S, x)->shape, &s)) return x;
  return sema_reshape(S, x, s, loc);
}

/* s with a new axis of size n at position ax (0 <= ax <= s.rank < MPL_MAX_RANK). */
static Shape insert_axis(Shape s, int ax, int64_t n) {
  for (int i = s.rank; i > ax; i--) s.d[i] = s.d[i - 1];
  s.d[ax] = n;
  s.rank++;
  return s;
}

/* The tensors of a variadic call, tuples flattened, with `axis` by keyword or as the
 * last positional int (as concat takes them). False after an error. */
static bool variadic_tensors(Sema *S, Scope *sc, Node *call, const char *fn, Value **out, int *n, int64_t *axis) {
  NodeList *l = &call->list;
  Value *vals = arena_alloc(S->a, sizeof(Value) * (size_t)(l->n + 1));
  int cnt = 0;
  bool ok = true;
  for (int i = 0; i < l->n; i++) {
    Node *arg = l->items[i];
    if (arg->name && !strcmp(arg->name, "axis")) { ok &= sema_const_int(S, sc, arg->a, "an axis", axis); continue; }
    if (arg->name) { sema_err(S, arg->loc, "%s has no argument '%s'", fn, arg->name); ok = false; continue; }
    Value v = sema_eval(S, sc, arg->a);
    if (v.kind == V_INT && i == l->n - 1 && cnt > 0) { *axis = v.i; continue; }
    if (v.kind == V_TUPLE) {
      Value *nv = arena_alloc(S->a, sizeof(Value) * (size_t)(cnt + v.n + l->n));
      memcpy(nv, vals, sizeof(Value) * (size_t)cnt);
      vals = nv;
      for (int j = 0; j < v.n; j++) vals[cnt++] = v.items[j];
      continue;
    }
    if (v.kind != V_TENSOR) {
      if (v.kind != V_ERR) sema_err(S, arg->loc, "%s needs tensors, not %s", fn, sema_value_desc(S, v));
      ok = false;
      continue;
    }
    vals[cnt++] = v;
  }
  if (ok && cnt == 0) { sema_err(S, call->loc, "%s needs at least one tensor", fn); ok = false; }
  *out = vals;
  *n = cnt;
  return ok;
}

/* ---- repeat, expand, stack -------------------------------------------------------------- */

/* repeat(x, n, axis): torch.repeat_interleave(x, n, dim = axis). */
static Value lower_repeat(Sema *S, Scope *sc, Node *call, Node **args) {
  Value x = tensor_of(S, sc, args[0], "repeat");
  int64_t n, axis;
  bool ok = sema_const_int(S, sc, args[1], "repeat's count", &n);
  ok &= sema_const_int(S, sc, args[2], "an axis", &axis);
  if (!ok || x.kind == V_ERR) return verr();
  Op *xi = sema_opv(S, x);
  int ax = sema_norm_axis(S, axis, xi->shape.rank, args[2]->loc);
  if (ax < 0) return verr();
  if (n < 1) { sema_err(S, args[1]->loc, "repeat's count must be at least 1, not %lld", (long long)n); return verr(); }
  if (n == 1) return x;
  Shape out = xi->shape;
  if (__builtin_mul_overflow(out.d[ax], n, &out.d[ax])) {
    sema_err(S, call->loc, "repeat: %lld copies of a dimension of %lld is too large", (long long)n, (long long)xi->shape.d[ax]);
    return verr();
  }
  if (!sema_check_shape(S, &out, call->loc)) return verr();
  if (xi->shape.d[ax] == 1) return expand_to(S, x, out, call->loc);
  if (xi->shape.rank == MPL_MAX_RANK) { sema_err(S, call->loc, "repeat of a tensor of rank %d (at most %d)", MPL_MAX_RANK, MPL_MAX_RANK - 1); return verr(); }
  Shape one = insert_axis(xi->shape, ax + 1, 1), wide = insert_axis(xi->shape, ax + 1, n);
  Value r = reshape_to(S, x, one, call->loc);
  if (r.kind != V_ERR) r = expand_to(S, r, wide, call->loc);
  return reshape_to(S, r, out, call->loc);
}

/* expand(x, d0, d1, ...): axes of size 1 broadcast to the given sizes; -1 keeps an
 * axis; more sizes than x has axes add leading ones (as torch's Tensor.expand). */
static Value lower_expand(Sema *S, Scope *sc, Node *call, Node **args) {
  (void)args;
  NodeList *l = &call->list;
  if (l->n < 1 || l->items[0]->name) { sema_err(S, call->loc, "expand(x, d0, d1, ...) needs a tensor first"); return verr(); }
  Value x = tensor_of(S, sc, l->items[0]->a, "expand");
  Shape s = {0};
  Loc at[MPL_MAX_RANK];
  bool ok = true;
  if (l->n - 1 > MPL_MAX_RANK) { sema_err(S, call->loc, "more than %d dimensions", MPL_MAX_RANK); return verr(); }
  for (int i = 1; i < l->n; i++) {
    Node *arg = l->items[i];
    if (arg->name) { sema_err(S, arg->loc, "expand takes no keyword arguments"); ok = false; continue; }
    at[s.rank] = arg->loc;
    if (!sema_const_int(S, sc, arg->a, "a dimension", &s.d[s.rank++])) ok = false;
  }
  if (!ok || x.kind == V_ERR) return verr();
  Op *xi = sema_opv(S, x);
  int r = xi->shape.rank, lead = s.rank - r;
  if (lead < 0) {
    sema_err(S, call->loc, "expand: %d sizes for %s%s, which has %d axes", s.rank, dtype_name(xi->dtype), sema_shape_str(S, xi), r);
    sema_note_made(S, x);
    return verr();
  }
  for (int i = 0; i < s.rank; i++) {
    int64_t have = i < lead ? 1 : xi->shape.d[i - lead];
    if (s.d[i] == -1 && i < lead) { /* (as torch's Tensor.expand) */
      sema_err(S, at[i], "expand: -1 keeps an axis of x, but axis %d of the result is a new leading one (give its size)", i);
      return verr();
    }
    if (s.d[i] == -1) s.d[i] = have;
    if (s.d[i] == have || have == 1) continue;
    sema_err(S, at[i], "expand: axis %d of %s%s has size %lld, not 1, so it cannot become %lld", i - lead,
             dtype_name(xi->dtype), sema_shape_str(S, xi), (long long)have, (long long)s.d[i]);
    sema_note_made(S, x);
    return verr();
  }
  if (!sema_check_shape(S, &s, call->loc)) return verr();
  return expand_to(S, x, s, call->loc);
}

/* stack(xs..., axis = 0): the tensors (one shape, one dtype) along a new axis. */
static Value lower_stack(Sema *S, Scope *sc, Node *call, Node **args) {
  (void)args;
  Value *xs;
  int n;
  int64_t axis = 0;
  if (!variadic_tensors(S, sc, call, "stack", &xs, &n, &axis)) return verr();
  Op *x0 = sema_opv(S, xs[0]);
  int r = x0->shape.rank;
  if (r == MPL_MAX_RANK) { sema_err(S, call->loc, "stack of tensors of rank %d (at most %d)", r, MPL_MAX_RANK - 1); return verr(); }
  int ax = sema_norm_axis(S, axis, r + 1, call->loc);
  if (ax < 0) return verr();
  for (int i = 1; i < n; i++) {
    Op *xi = sema_opv(S, xs[i]);
    if (xi->dtype != x0->dtype || !shape_eq(&xi->shape, &x0->shape)) {
      sema_err(S, call->loc, "stack needs tensors of one type and shape, not %s%s and %s%s", dtype_name(x0->dtype),
               sema_shape_str(S, x0), dtype_name(xi->dtype), sema_shape_str(S, xi));
      sema_note_operands(S, xs[0], xs[i]);
      return verr();
    }
  }
  Shape one = insert_axis(x0->shape, ax, 1), out = insert_axis(x0->shape, ax, n);
  if (!sema_check_shape(S, &out, call->loc)) return verr();
  int *in = arena_alloc(S->a, sizeof(int) * (size_t)n);
  for (int i = 0; i < n; i++) {
    Value v = reshape_to(S, xs[i], one, call->loc);
    if (v.kind == V_ERR) return v;
    in[i] = v.op;
  }
  if (n == 1) return vtensor(S, S->g->ops[in[0]]);
  Op *op = sema_op(S, OP_CONCAT, n, in, call->loc);
  if (!op) return verr();
  op->shape = out;
  op->dtype = x0->dtype;
  op->axis = ax;
  return vtensor(S, op);
}

/* ---- sdpa ------------------------------------------------------------------------------------ */

/* Checks q [..., H, T, hs], k [..., Hkv, S, hs], v [..., Hkv, S, hv] (one float dtype,
 * the same leading dims, H a multiple of Hkv). */
static bool sdpa_check(Sema *S, Node *call, Value q, Value k, Value v) {
  Op *qi = sema_opv(S, q), *ki = sema_opv(S, k), *vi = sema_opv(S, v);
  int r = qi->shape.rank;
  if (qi->dtype != ki->dtype || qi->dtype != vi->dtype || !dtype_is_float(qi->dtype)) {
    sema_err(S, call->loc, "sdpa needs q, k and v of one float type, not %s, %s and %s", dtype_name(qi->dtype),
             dtype_name(ki->dtype), dtype_name(vi->dtype));
    return false;
  }
  bool same = r >= 3 && r < MPL_MAX_RANK && ki->shape.rank == r && vi->shape.rank == r;
  for (int i = 0; same && i < r - 3; i++) same = ki->shape.d[i] == qi->shape.d[i] && vi->shape.d[i] == qi->shape.d[i];
  same = same && qi->shape.d[r - 1] == ki->shape.d[r - 1] && ki->shape.d[r - 3] == vi->shape.d[r - 3] &&
         ki->shape.d[r - 2] == vi->shape.d[r - 2];
  if (!same) {
    /* the one mismatch named where there is one (pass 71: head sizes 16 and 32 got the
       general form alone) */
    const char *why = "";
    bool ranks = r >= 3 && r < MPL_MAX_RANK && ki->shape.rank == r && vi->shape.rank == r;
    if (ranks && qi->shape.d[r - 1] != ki->shape.d[r - 1])
      why = arena_printf(S->a, ": q's head size %lld is not k's %lld", (long long)qi->shape.d[r - 1],
                         (long long)ki->shape.d[r - 1]);
    else if (ranks && ki->shape.d[r - 2] != vi->shape.d[r - 2])
      why = arena_printf(S->a, ": k has %lld keys, v %lld", (long long)ki->shape.d[r - 2], (long long)vi->shape.d[r - 2]);
    else if (ranks && ki->shape.d[r - 3] != vi->shape.d[r - 3])
      why = arena_printf(S->a, ": k has %lld heads, v %lld", (long long)ki->shape.d[r - 3], (long long)vi->shape.d[r - 3]);
    sema_err(S, call->loc, "sdpa: q %s, k %s and v %s do not fit [..., H, T, hs], [..., Hkv, S, hs], [..., Hkv, S, hv] (rank 3 to %d)%s",
             sema_shape_str(S, qi), sema_shape_str(S, ki), sema_shape_str(S, vi), MPL_MAX_RANK - 1, why);
    sema_note_operands(S, q, k);
    if (v.op != q.op && v.op != k.op) sema_note_made(S, v);
    return false;
  }
  int64_t H = qi->shape.d[r - 3], Hkv = ki->shape.d[r - 3];
  if (H % Hkv) {
    sema_err(S, call->loc, "sdpa: the %lld query heads of q %s are not a multiple of the %lld key/value heads of k %s",
             (long long)H, sema_shape_str(S, qi), (long long)Hkv, sema_shape_str(S, ki));
    sema_note_operands(S, q, k);
    return false;
  }
  return true;
}

static Value cast_to(Sema *S, Value x, DType dt, Loc loc) {
  if (x.kind == V_ERR || sema_opv(S, x)->dtype == dt) return x;
  Op *op = sema_op(S, OP_CAST, 1, &x.op, loc);
  if (!op) return verr();
  op->shape = sema_opv(S, x)->shape;
  op->dtype = dt;
  return vtensor(S, op);
}

/* att [..., T, S] with keys j > i (query i) set to -inf: causal_mask(max(T, S)) cut to [T, S]. */
static Value causal(Sema *S, Value att, Loc loc) {
  Shape s = sema_opv(S, att)->shape;
  int64_t T = s.d[s.rank - 2], Sk = s.d[s.rank - 1], n = T > Sk ? T : Sk;
  Op *m = sema_op(S, OP_CAUSAL_MASK, 0, NULL, loc);
  if (!m) return verr();
  m->shape = (Shape){2, {n, n}};
  m->dtype = DT_BOOL;
  Value mask = vtensor(S, m);
  if (T < n) mask = sema_slice(S, mask, 0, 0, T, loc);
  if (Sk < n && mask.kind != V_ERR) mask = sema_slice(S, mask, 1, 0, Sk, loc);
  Value ninf = sema_scalar(S, vfloat(-INFINITY, loc), sema_opv(S, att)->dtype, loc);
  if (mask.kind == V_ERR || ninf.kind == V_ERR) return verr();
  int in[3] = {mask.op, att.op, ninf.op};
  Op *op = sema_op(S, OP_WHERE, 3, in, loc);
  if (!op) return verr();
  op->shape = s;
  op->dtype = sema_opv(S, att)->dtype;
  return vtensor(S, op);
}

static Value softmax_last(Sema *S, Value x, Loc loc) {
  if (x.kind == V_ERR) return x;
  Op *op = sema_op(S, OP_SOFTMAX, 1, &x.op, loc);
  if (!op) return verr();
  op->shape = sema_opv(S, x)->shape;
  op->dtype = sema_opv(S, x)->dtype;
  op->axis = op->shape.rank - 1;
  return vtensor(S, op);
}

/* The fused form (issue 14): one SDPA op, and its RESULT 1, the log-sum-exp of each query
 * row, which the backward (SDPA_GRAD, autodiff.c) reads instead of a T x S buffer. */
static Value fused_sdpa(Sema *S, Value q, Value k, Value v, bool is_causal, double scale, Loc loc) {
  int in[3] = {q.op, k.op, v.op};
  Shape qs = sema_opv(S, q)->shape;
  int r = qs.rank;
  Op *op = sema_op(S, OP_SDPA, 3, in, loc);
  if (!op) return verr();
  op->shape = qs;
  op->shape.d[r - 1] = sema_opv(S, v)->shape.d[r - 1];
  op->dtype = sema_opv(S, q)->dtype; /* out in the inputs' type; the lse f32 */
  op->value = scale;
  op->causal = is_causal;
  Op *lse = sema_op(S, OP_RESULT, 1, &op->id, loc);
  if (!lse) return verr();
  lse->shape = qs;
  lse->shape.rank = r - 1;
  lse->dtype = DT_F32;
  lse->axis = 1;
  return vtensor(S, op);
}

/* sdpa(q, k, v, causal = false, scale = 1/sqrt(hs)): see the file's comment. */
static Value lower_sdpa(Sema *S, Scope *sc, Node *call, Node **args) {
  Value q = tensor_of(S, sc, args[0], "sdpa"), k = tensor_of(S, sc, args[1], "sdpa"), v = tensor_of(S, sc, args[2], "sdpa");
  bool is_causal = false, ok = true;
  double scale = 0;
  if (args[3]) {
    Value c = sema_eval(S, sc, args[3]);
    if (c.kind == V_BOOL) is_causal = c.i;
    else { if (c.kind != V_ERR) sema_err(S, args[3]->loc, "sdpa's causal must be a compile-time bool, not %s", sema_value_desc(S, c)); ok = false; }
  }
  if (args[4]) ok &= sema_const_num(S, sc, args[4], "sdpa's scale", &scale);
  if (!ok || q.kind == V_ERR || k.kind == V_ERR || v.kind == V_ERR || !sdpa_check(S, call, q, k, v)) return verr();
  Shape qs = sema_opv(S, q)->shape, ks = sema_opv(S, k)->shape, vs = sema_opv(S, v)->shape;
  int r = qs.rank;
  int64_t H = qs.d[r - 3], Hkv = ks.d[r - 3], G = H / Hkv, hs = qs.d[r - 1];
  if (!args[4]) scale = 1.0 / sqrt((double)hs);
  Loc loc = call->loc;
  DType dt = sema_opv(S, q)->dtype;
  int64_t hv = sema_opv(S, v)->shape.d[r - 1];
  if (dtype_is_float(dt) && !S->opt->no_fused_sdpa && hs <= MPL_SDPA_MAX_HEAD && hv <= MPL_SDPA_MAX_HEAD)
    return fused_sdpa(S, q, k, v, is_causal, scale, loc);
  if (G > 1) { /* [..., Hkv, G, T, hs] against [..., Hkv, 1, S, hs]: no copy of k and v per head */
    Shape q5 = qs, k5 = insert_axis(ks, r - 2, 1), v5 = insert_axis(vs, r - 2, 1);
    q5.d[r - 3] = Hkv;
    q5 = insert_axis(q5, r - 2, G);
    q = reshape_to(S, q, q5, loc);
    k = reshape_to(S, k, k5, loc);
    v = reshape_to(S, v, v5, loc);
    if (q.kind == V_ERR || k.kind == V_ERR || v.kind == V_ERR) return verr();
  }
  Value att = sema_matmul(S, q, k, false, true, loc);
  att = sema_binary(S, OP_MUL, att, vfloat(scale, loc), loc, "sdpa");
  if (is_causal && att.kind != V_ERR) att = causal(S, att, loc);
  Value p = cast_to(S, softmax_last(S, cast_to(S, att, DT_F32, loc), loc), dt, loc);
  if (p.kind == V_ERR) return p;
  Value y = sema_matmul(S, p, v, false, false, loc);
  if (G == 1 || y.kind == V_ERR) return y;
  Shape out = qs;
  out.d[r - 1] = vs.d[r - 1];
  return reshape_to(S, y, out, loc);
}

/* ---- the table --------------------------------------------------------------------------------- */

enum { LOWER_MAXARGS = 5 };

typedef Value (*LowerFn)(Sema *S, Scope *sc, Node *call, Node **args);
typedef struct Lowered {
  const char *name;
  LowerFn fn;
  int nreq; /* required args; -1: variadic (the fn reads call->list itself) */
  const char *params[LOWER_MAXARGS];
} Lowered;

/* ORDER: none; looked up by name after sema_builtin.c's BUILTINS. */
static const Lowered lowered[] = {
    {"repeat", lower_repeat, 3, {"x", "n", "axis"}},
    {"expand", lower_expand, -1, {0}},
    {"stack", lower_stack, -1, {0}},
    {"sdpa", lower_sdpa, 3, {"q", "k", "v", "causal", "scale"}},
};

Value sema_lowered_builtin(Sema *S, Scope *sc, Node *call, const char *name, bool *found) {
  for (size_t i = 0; i < sizeof lowered / sizeof lowered[0]; i++) {
    const Lowered *b = &lowered[i];
    if (strcmp(b->name, name)) continue;
    *found = true;
    if (call->as_name) {
      sema_err(S, call->as_name->loc, "'as' names an instance, but %s declares no params", name);
      return verr();
    }
    Node *args[LOWER_MAXARGS] = {0};
    int np = 0;
    while (np < LOWER_MAXARGS && b->params[np]) np++;
    if (b->nreq >= 0 && !sema_bind_args(S, call, b->name, b->params, np, b->nreq, args)) return verr();
    return b->fn(S, sc, call, args);
  }
  *found = false;
  return verr();
}

void sema_suggest_lowered(Suggest *g) {
  for (size_t i = 0; i < sizeof lowered / sizeof lowered[0]; i++) sema_suggest(g, lowered[i].name);
}
