/*
 * fuse_index.c — the kernels of the ops that index by data or by order (issue 13): the
 * index remaps GATHER, ONE_HOT and IM2COL (group members, computed at any index), the row
 * reductions ARGMAX, CHECK and COL2IM (row-group members, through fuse_emit.c's reduction
 * loops), and the special kernels CUMSUM, CUMSUM_REV, TOPK and GATHER_GRAD (one kernel
 * each, one row along the op's axis per outer iteration, sequential inside the row).
 * fuse_emit.c dispatches here and lends its emission (fuse_int.h); this file never
 * groups ops (fuse.c does).
 *
 * Invariants:
 *  - indices read from data are clamped into range before any load: a bad index never
 *    reads outside a buffer (sema adds a CHECK op whose count the runtime stops on);
 *  - sums run in a fixed order (cumsum left to right in blocks of about sqrt(n), each
 *    block's running sum added to the blocks' before it; gather's gradient in the order of
 *    the indices' positions; col2im over the kernel window row-major), the same on the
 *    CPU and the GPU, with no atomics: each outer iteration owns its outputs;
 *  - argmax and topk order elements by value, NaN largest, ties to the lower index;
 *  - i64 index arithmetic stays non-negative (the IR divides i64 unsigned): a
 *    coordinate that could go below 0 is compared before it is subtracted.
 */
#include "fuse_int.h"

#include <math.h>
#include <string.h>

typedef int Idx[MPL_MAX_RANK];

/* ---- small builders -------------------------------------------------------------------- */

static int I(Emit *e, int64_t v) { return kb_int(fuse_emit_builder(e), KT_I64, v); }
static int IB(Emit *e, KiOp op, int x, int y) { return kb_bin(fuse_emit_builder(e), op, KT_I64, x, y); }
static int CMP(Emit *e, KiOp op, int x, int y) { return kb_bin(fuse_emit_builder(e), op, KT_BOOL, x, y); }
static int AND(Emit *e, int x, int y) { return kb_bin(fuse_emit_builder(e), KI_AND, KT_BOOL, x, y); }
static int OR(Emit *e, int x, int y) { return kb_bin(fuse_emit_builder(e), KI_OR, KT_BOOL, x, y); }
static int SEL(Emit *e, int c, int x, int y) { return kb_select(fuse_emit_builder(e), c, x, y); }
static int to_i64(Emit *e, int x) { return kb_un(fuse_emit_builder(e), KI_CAST, KT_I64, x); }

static int clamp(Emit *e, int x, int64_t n) { return IB(e, KI_MIN, IB(e, KI_MAX, x, I(e, 0)), I(e, n - 1)); }

/* The smallest value of a kernel type (the start of a max reduction). */
static int lowest(Emit *e, KType t) {
  return t == KT_F32 ? kb_f32(fuse_emit_builder(e), -INFINITY) : kb_int(fuse_emit_builder(e), t, INT32_MIN);
}

static const Shape *shape_of(Emit *e, int v) { return &fuse_emit_fuse(e)->g->ops[v]->shape; }

/* s without axis a. */
static Shape drop_axis(const Shape *s, int a) {
  Shape r = {0};
  for (int i = 0; i < s->rank; i++)
    if (i != a) r.d[r.rank++] = s->d[i];
  return r;
}

/* The full index of s with row (s's other axes, in order) and position p on axis a. */
static void with_axis(const Shape *s, int a, const int *row, int p, int *full) {
  for (int i = 0, j = 0; i < s->rank; i++) full[i] = i == a ? p : row[j++];
}

/* ---- the order of argmax and topk ------------------------------------------------------- */

/* x == y, NaN equal to NaN (f32). */
static int same(Emit *e, KType t, int x, int y) {
  int eq = CMP(e, KI_EQ, x, y);
  if (t != KT_F32) return eq;
  return OR(e, eq, AND(e, CMP(e, KI_NE, x, x), CMP(e, KI_NE, y, y)));
}

/* x < y with NaN the largest value (f32). */
static int below(Emit *e, KType t, int x, int y) {
  int lt = CMP(e, KI_LT, x, y);
  if (t != KT_F32) return lt;
  return SEL(e, CMP(e, KI_NE, y, y), CMP(e, KI_EQ, x, x), lt);
}

/* ---- index remaps -------------------------------------------------------------------------- */

/* GATHER(x, idx) at idx's index: x there, with the axis's coordinate read from idx. */
static int emit_gather(Emit *e, const Op *op, const int *idx) {
  const Shape *xs = shape_of(e, op->in[0]);
  Idx xi;
  memcpy(xi, idx, sizeof(int) * (size_t)xs->rank);
  xi[op->axis] = clamp(e, to_i64(e, fuse_emit_value(e, op->in[1], idx)), xs->d[op->axis]);
  return fuse_emit_value(e, op->in[0], xi);
}

/* ONE_HOT(idx) at [..., c]: 1 where idx[...] == c. */
static int emit_one_hot(Emit *e, const Op *op, const int *idx) {
  int r = op->shape.rank;
  int hot = CMP(e, KI_EQ, to_i64(e, fuse_emit_value(e, op->in[0], idx)), idx[r - 1]);
  KBuilder *b = fuse_emit_builder(e);
  return SEL(e, hot, kb_f32(b, 1.0f), kb_f32(b, 0.0f));
}

/* The geometry of a convolution's patches (IM2COL, COL2IM). */
typedef struct Patch {
  int64_t N, C, H, W, kh, kw, stride, pad, Ho, Wo;
} Patch;

static Patch patch_of(const Op *op, const Shape *xs) {
  Patch p = {xs->d[0], xs->d[1], xs->d[2], xs->d[3], op->axis, op->axis2, op->begin, op->end, 0, 0};
  p.Ho = (p.H + 2 * p.pad - p.kh) / p.stride + 1;
  p.Wo = (p.W + 2 * p.pad - p.kw) / p.stride + 1;
  return p;
}

/* The image coordinate at = o*stride + k - pad of an output place o and window offset k,
 * clamped into [0, n); *inside: whether it is in the image (not in the padding). */
static int patch_coord(Emit *e, int o, int k, const Patch *p, int64_t n, int *inside) {
  int pos = IB(e, KI_ADD, IB(e, KI_MUL, o, I(e, p->stride)), k); /* at + pad >= 0 */
  *inside = AND(e, CMP(e, KI_GE, pos, I(e, p->pad)), CMP(e, KI_LT, pos, I(e, n + p->pad)));
  return clamp(e, IB(e, KI_SUB, IB(e, KI_MAX, pos, I(e, p->pad)), I(e, p->pad)), n);
}

/* IM2COL at [n, c*kh*kw + ki*kw + kj, oh*Wo + ow]: x[n, c, oh*s + ki - p, ow*s + kj - p], 0 outside. */
static int emit_im2col(Emit *e, const Op *op, const int *idx) {
  Patch p = patch_of(op, shape_of(e, op->in[0]));
  int k = idx[1], q = idx[2], in_h, in_w;
  int c = IB(e, KI_DIV, k, I(e, p.kh * p.kw)), ki = IB(e, KI_REM, IB(e, KI_DIV, k, I(e, p.kw)), I(e, p.kh));
  int kj = IB(e, KI_REM, k, I(e, p.kw));
  int h = patch_coord(e, IB(e, KI_DIV, q, I(e, p.Wo)), ki, &p, p.H, &in_h);
  int w = patch_coord(e, IB(e, KI_REM, q, I(e, p.Wo)), kj, &p, p.W, &in_w);
  int xi[4] = {idx[0], c, h, w};
  int v = fuse_emit_value(e, op->in[0], xi);
  return SEL(e, AND(e, in_h, in_w), v, kb_f32(fuse_emit_builder(e), 0.0f));
}

/* The output place o with o*stride + k = at + pad for an image coordinate at, clamped into
 * [0, n); *valid: whether there is one (k <= at + pad, divisible, in range). */
static int patch_place(Emit *e, int at, int k, const Patch *p, int64_t n, int *valid) {
  int pos = IB(e, KI_ADD, at, I(e, p->pad)), ge = CMP(e, KI_GE, pos, k);
  int d = IB(e, KI_SUB, IB(e, KI_MAX, pos, k), k); /* o*stride, when ge */
  int o = IB(e, KI_DIV, d, I(e, p->stride));
  *valid = AND(e, AND(e, ge, CMP(e, KI_EQ, IB(e, KI_REM, d, I(e, p->stride)), I(e, 0))), CMP(e, KI_LT, o, I(e, n)));
  return clamp(e, o, n);
}

/* One term of COL2IM at [n, c, h, w, ki, kj]: the patch element that read x[n, c, h, w]
 * through window offset (ki, kj), or 0. */
static int elem_col2im(Emit *e, const Op *op, const int *d, const int *cap) {
  const Shape *os = &op->shape;
  Patch p = patch_of(op, os);
  int vh, vw;
  int oh = patch_place(e, d[2], d[4], &p, p.Ho, &vh), ow = patch_place(e, d[3], d[5], &p, p.Wo, &vw);
  int k = IB(e, KI_ADD, IB(e, KI_MUL, IB(e, KI_ADD, IB(e, KI_MUL, d[1], I(e, p.kh)), d[4]), I(e, p.kw)), d[5]);
  int ci[3] = {d[0], k, IB(e, KI_ADD, IB(e, KI_MUL, oh, I(e, p.Wo)), ow)};
  int v = fuse_emit_value(e, op->in[0], ci);
  return SEL(e, AND(e, vh, vw), v, kb_f32(fuse_emit_builder(e), 0.0f));
}

/* ---- row reductions ------------------------------------------------------------------------ */

void fuse_index_red_spec(const Fuse *f, const Op *op, Shape *dom, bool *red) {
  const Shape *in = &f->g->ops[op->in[0]]->shape;
  memset(red, 0, sizeof(bool) * MPL_MAX_RANK);
  *dom = *in;
  switch (op->kind) {
  case OP_ARGMAX: red[op->axis] = true; break;
  case OP_CHECK:
    for (int i = 0; i < in->rank; i++) red[i] = true;
    break;
  case OP_COL2IM: /* [N, C, H, W] and the window [kh, kw] */
    *dom = op->shape;
    dom->d[4] = op->axis, dom->d[5] = op->axis2, dom->rank = 6;
    red[4] = red[5] = true;
    break;
  default: die("fuse: %s is not an index reduction", op_name(op->kind));
  }
}

/* The row of a reduction at the op's output index: dom's kept entries; reduced ones -1. */
static void row_of(const Op *op, const Shape *dom, const bool *red, const int *idx, int *row) {
  bool keep = op->shape.rank == dom->rank;
  for (int i = 0, j = 0; i < dom->rank; i++) {
    row[i] = red[i] ? -1 : idx[j];
    j += !red[i] || keep;
  }
}

static int elem_input(Emit *e, const Op *op, const int *d, const int *cap) {
  return fuse_emit_value(e, op->in[0], d);
}

/* For the first index of a maximum m (cap: {depth, m}): n-1-k where element k equals m (or
 * is NaN, then m is NaN), else 0. The largest of these is the first index reversed; one
 * always matches, as m is an element. */
static int elem_argmax(Emit *e, const Op *op, const int *d, const int *cap) {
  const Op *in = fuse_emit_fuse(e)->g->ops[op->in[0]];
  const Shape *xs = &in->shape;
  KType t = kt_of_dtype(in->dtype);
  int x = fuse_emit_value(e, op->in[0], d);
  int hit = t == KT_F32 ? OR(e, CMP(e, KI_EQ, x, cap[1]), CMP(e, KI_NE, x, x)) : CMP(e, KI_EQ, x, cap[1]);
  return SEL(e, hit, IB(e, KI_SUB, I(e, xs->d[op->axis] - 1), d[op->axis]), I(e, 0));
}

static int emit_argmax(Emit *e, const Op *op, const int *idx) {
  Shape dom;
  bool red[MPL_MAX_RANK];
  Idx row;
  fuse_index_red_spec(fuse_emit_fuse(e), op, &dom, red);
  row_of(op, &dom, red, idx, row);
  KType t = kt_of_dtype(fuse_emit_fuse(e)->g->ops[op->in[0]]->dtype);
  int m = fuse_emit_reduce(e, op, 1, &dom, red, row, KR_MAX, t, elem_input, NULL);
  int cap[2] = {kb_depth(fuse_emit_builder(e), m), m};
  int r = fuse_emit_reduce(e, op, 2, &dom, red, row, KR_MAX, KT_I64, elem_argmax, cap);
  return kb_un(fuse_emit_builder(e), KI_CAST, KT_I32, IB(e, KI_SUB, I(e, dom.d[op->axis] - 1), r));
}

/* A CHECK's element: 1 where op kind `key` rejects it (GATHER: outside [0, bound); REM: 0). */
static int elem_check(Emit *e, const Op *op, const int *d, const int *cap) {
  KBuilder *b = fuse_emit_builder(e);
  int x = fuse_emit_value(e, op->in[0], d), bad;
  if (op->key != OP_REM && op->key != OP_DIV) /* indices or targets in [0, bound); else a zero divisor */
    bad = OR(e, CMP(e, KI_LT, x, kb_int(b, KT_I32, 0)), CMP(e, KI_GE, x, kb_int(b, KT_I32, (int64_t)op->value)));
  else bad = CMP(e, KI_EQ, x, kb_int(b, KT_I32, 0));
  return SEL(e, bad, kb_int(b, KT_I32, 1), kb_int(b, KT_I32, 0));
}

/* A reduction of kind k with element fn over op's domain (CHECK: a count; COL2IM: a sum). */
static int emit_row_sum(Emit *e, const Op *op, const int *idx, KType t, ElemFn fn) {
  Shape dom;
  bool red[MPL_MAX_RANK];
  Idx row;
  fuse_index_red_spec(fuse_emit_fuse(e), op, &dom, red);
  row_of(op, &dom, red, idx, row);
  return fuse_emit_reduce(e, op, 3, &dom, red, row, KR_SUM, t, fn, NULL);
}

int fuse_index_member(Emit *e, const Op *op, const int *idx) {
  switch (op->kind) {
  case OP_GATHER: return emit_gather(e, op, idx);
  case OP_ONE_HOT: return emit_one_hot(e, op, idx);
  case OP_IM2COL: return emit_im2col(e, op, idx);
  case OP_ARGMAX: return emit_argmax(e, op, idx);
  case OP_CHECK: return emit_row_sum(e, op, idx, KT_I32, elem_check);
  case OP_COL2IM: return emit_row_sum(e, op, idx, KT_F32, elem_col2im);
  default: die("fuse: %s is not an index op", op_name(op->kind));
  }
}

/* ---- special kernels: one row along the axis per outer iteration ---------------------------- */

bool fuse_index_special(OpKind k) {
  return k == OP_CUMSUM || k == OP_CUMSUM_REV || k == OP_TOPK || k == OP_GATHER_GRAD;
}

/* The shape whose rows along the axis the outer loop walks: the input's (the output's for
 * GATHER_GRAD, which writes whole rows of x's gradient). */
static const Shape *rows_shape(const Fuse *f, const Op *op) {
  return op->kind == OP_GATHER_GRAD || op->kind == OP_CUMSUM || op->kind == OP_CUMSUM_REV ? &op->shape
                                                                                          : &f->g->ops[op->in[0]]->shape;
}

int64_t fuse_index_special_outer(const Fuse *f, const Op *op) {
  const Shape *s = rows_shape(f, op);
  return shape_numel(s) / s->d[op->axis];
}

/* This outer iteration's row: the other axes' coordinates of rows_shape. */
static void this_row(Emit *e, const Op *op, int *row) {
  Shape rs = drop_axis(rows_shape(fuse_emit_fuse(e), op), op->axis);
  fuse_emit_delinearize(e, &rs, kb_outer(fuse_emit_builder(e)), row);
}

/* CUMSUM (CUMSUM_REV) along a row of n, in order k = 0 .. n - 1 over positions p(k) = k
 * (n - 1 - k), in blocks of L: first each element of a block gets the block's own running
 * sum (y at k is y at k - 1, read back from the output, plus x), then the previous block's
 * last y is added to each. So y(k) = S(block) + local(k): a long row rounds once per block
 * in S and at most L times in its local part, not once per element into a large sum (2^17
 * additions of 0.1 were 0.1% off; PyTorch's CPU sums in f64). L is ceil(sqrt(n)), the last
 * block holding what is left (n below 64: one block, the plain running sum). */
static int cum_pos(Emit *e, int64_t n, bool rev, int k) { return rev ? IB(e, KI_SUB, I(e, n - 1), k) : k; }

/* The block of `len` elements from sequence index k0 (an i64 value); `first`: k0 is 0, so
 * no blocks come before it and its running sums are the row's (no second pass adding 0). */
static void cumsum_block(Emit *e, const Op *op, const int *row, int out, int k0, int64_t len, bool first) {
  KBuilder *b = fuse_emit_builder(e);
  const Shape *s = &op->shape;
  int64_t n = s->d[op->axis];
  bool rev = op->kind == OP_CUMSUM_REV;
  KType t = kt_of_dtype(op->dtype);
  int zero = t == KT_F32 ? kb_f32(b, 0.0f) : kb_int(b, t, 0);
  Idx at, prev;
  /* the block's running sums; its first element's (discarded) read of the element before it
     is clamped into the row (k0 = 0: position 0 itself, not yet written: the select drops it) */
  int depth = kb_depth(b, k0); /* inside the loop over blocks, or the kernel's body */
  int loop = kb_loop_begin(b, len, KR_NONE, KT_VOID, -1, depth), i = kb_loopvar(b, loop);
  int k = IB(e, KI_ADD, k0, i);
  int kq = IB(e, KI_SUB, IB(e, KI_MAX, k, I(e, 1)), I(e, 1));
  with_axis(s, op->axis, row, cum_pos(e, n, rev, k), at);
  with_axis(s, op->axis, row, cum_pos(e, n, rev, kq), prev);
  int lin = fuse_emit_linearize(e, s, at);
  int before = SEL(e, CMP(e, KI_GT, i, I(e, 0)), kb_load(b, out, fuse_emit_linearize(e, s, prev)), zero);
  kb_store(b, out, lin, kb_bin(b, KI_ADD, t, before, fuse_emit_value(e, op->in[0], at)));
  kb_loop_end(b, loop, -1);
  if (first) return;
  /* the sum of the blocks before it, the previous block's last y */
  int kp = IB(e, KI_SUB, IB(e, KI_MAX, k0, I(e, 1)), I(e, 1));
  with_axis(s, op->axis, row, cum_pos(e, n, rev, kp), prev);
  int base = SEL(e, CMP(e, KI_GT, k0, I(e, 0)), kb_load(b, out, fuse_emit_linearize(e, s, prev)), zero);
  loop = kb_loop_begin(b, len, KR_NONE, KT_VOID, -1, depth), i = kb_loopvar(b, loop);
  with_axis(s, op->axis, row, cum_pos(e, n, rev, IB(e, KI_ADD, k0, i)), at);
  lin = fuse_emit_linearize(e, s, at);
  kb_store(b, out, lin, kb_bin(b, KI_ADD, t, base, kb_load(b, out, lin)));
  kb_loop_end(b, loop, -1);
}

static void emit_cumsum(Emit *e, const Op *op) {
  KBuilder *b = fuse_emit_builder(e);
  int64_t n = op->shape.d[op->axis], len = 1;
  while (len * len < n) len++;
  if (n < 64) len = n;
  int64_t nb = n / len, tail = n - nb * len; /* (a divisor near sqrt(n) left n = 2 p in blocks of 2: pass 70) */
  int out = fuse_emit_arg(e, op->id, KA_OUT);
  Idx row;
  this_row(e, op, row);
  if (nb == 1) {
    cumsum_block(e, op, row, out, I(e, 0), len, true);
  } else {
    int blocks = kb_loop_begin(b, nb, KR_NONE, KT_VOID, -1, 0);
    cumsum_block(e, op, row, out, IB(e, KI_MUL, kb_loopvar(b, blocks), I(e, len)), len, false);
    kb_loop_end(b, blocks, -1);
  }
  if (tail) cumsum_block(e, op, row, out, I(e, nb * len), tail, false);
}

/* Whether element x at position i comes after (xp, p) in the order: smaller, or equal at a
 * higher index. */
static int after(Emit *e, KType t, int x, int i, int xp, int p) {
  return OR(e, below(e, t, x, xp), AND(e, same(e, t, x, xp), CMP(e, KI_GT, i, p)));
}

/* TOPK: the j-th index is the first maximum among the elements after the (j-1)-th pick (read
 * back from the output; the first pick is zeroed before, so its discarded read at j = 0
 * reads a written value): two passes over the row per pick, O(k n) per row. */
static void emit_topk(Emit *e, const Op *op) {
  KBuilder *b = fuse_emit_builder(e);
  const Shape *xs = shape_of(e, op->in[0]);
  int64_t n = xs->d[op->axis], k = op->shape.d[op->axis];
  KType t = kt_of_dtype(fuse_emit_fuse(e)->g->ops[op->in[0]]->dtype);
  int out = fuse_emit_arg(e, op->id, KA_OUT);
  Idx row, at, xi;
  this_row(e, op, row);
  with_axis(&op->shape, op->axis, row, I(e, 0), at);
  kb_store(b, out, fuse_emit_linearize(e, &op->shape, at), kb_int(b, KT_I32, 0));
  int lj = kb_loop_begin(b, k, KR_NONE, KT_VOID, -1, 0), j = kb_loopvar(b, lj), depth = kb_depth(b, j);
  with_axis(&op->shape, op->axis, row, IB(e, KI_SUB, IB(e, KI_MAX, j, I(e, 1)), I(e, 1)), at);
  int p = clamp(e, to_i64(e, kb_load(b, out, fuse_emit_linearize(e, &op->shape, at))), n), first = CMP(e, KI_EQ, j, I(e, 0));
  with_axis(xs, op->axis, row, p, xi);
  int xp = fuse_emit_value(e, op->in[0], xi);
  int l1 = kb_loop_begin(b, n, KR_MAX, t, lowest(e, t), depth), i1 = kb_loopvar(b, l1);
  with_axis(xs, op->axis, row, i1, xi);
  int x1 = fuse_emit_value(e, op->in[0], xi);
  kb_loop_end(b, l1, SEL(e, OR(e, first, after(e, t, x1, i1, xp, p)), x1, lowest(e, t)));
  int l2 = kb_loop_begin(b, n, KR_MAX, KT_I64, I(e, 0), depth), i2 = kb_loopvar(b, l2);
  with_axis(xs, op->axis, row, i2, xi);
  int x2 = fuse_emit_value(e, op->in[0], xi);
  int hit = AND(e, OR(e, first, after(e, t, x2, i2, xp, p)), same(e, t, x2, l1));
  kb_loop_end(b, l2, SEL(e, hit, IB(e, KI_SUB, I(e, n - 1), i2), I(e, 0)));
  with_axis(&op->shape, op->axis, row, j, at);
  int pick = kb_un(b, KI_CAST, KT_I32, IB(e, KI_SUB, I(e, n - 1), l2));
  kb_store(b, out, fuse_emit_linearize(e, &op->shape, at), pick);
  kb_loop_end(b, lj, -1);
}

/* GATHER_GRAD(idx, dy): a row of x's gradient is zeroed, then dy's row added at idx's
 * values in position order (rows of x beyond idx's extent on another axis stay 0). */
static void emit_gather_grad(Emit *e, const Op *op) {
  KBuilder *b = fuse_emit_builder(e);
  const Shape *xs = &op->shape, *is = shape_of(e, op->in[0]);
  int64_t n = xs->d[op->axis], m = is->d[op->axis];
  int out = fuse_emit_arg(e, op->id, KA_OUT);
  Idx row, irow, at, ii;
  this_row(e, op, row);
  int inside = kb_int(b, KT_BOOL, 1);
  for (int i = 0, j = 0; i < xs->rank; i++) {
    if (i == op->axis) continue;
    inside = AND(e, inside, CMP(e, KI_LT, row[j], I(e, is->d[i])));
    irow[j] = clamp(e, row[j], is->d[i]);
    j++;
  }
  int l1 = kb_loop_begin(b, n, KR_NONE, KT_VOID, -1, 0);
  with_axis(xs, op->axis, row, kb_loopvar(b, l1), at);
  kb_store(b, out, fuse_emit_linearize(e, xs, at), kb_f32(b, 0.0f));
  kb_loop_end(b, l1, -1);
  int l2 = kb_loop_begin(b, m, KR_NONE, KT_VOID, -1, 0);
  with_axis(is, op->axis, irow, kb_loopvar(b, l2), ii);
  int t = to_i64(e, fuse_emit_value(e, op->in[0], ii));
  int ok = AND(e, inside, AND(e, CMP(e, KI_GE, t, I(e, 0)), CMP(e, KI_LT, t, I(e, n))));
  with_axis(xs, op->axis, row, clamp(e, t, n), at);
  int lin = fuse_emit_linearize(e, xs, at);
  int dy = SEL(e, ok, fuse_emit_value(e, op->in[1], ii), kb_f32(b, 0.0f));
  kb_store(b, out, lin, kb_bin(b, KI_ADD, KT_F32, kb_load(b, out, lin), dy));
  kb_loop_end(b, l2, -1);
}

void fuse_index_emit_special(Emit *e, const Op *op) {
  switch (op->kind) {
  case OP_CUMSUM: case OP_CUMSUM_REV: emit_cumsum(e, op); break;
  case OP_TOPK: emit_topk(e, op); break;
  case OP_GATHER_GRAD: emit_gather_grad(e, op); break;
  default: die("fuse: %s is not a special index kernel", op_name(op->kind));
  }
}
