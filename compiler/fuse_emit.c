/*
 * fuse_emit.c — fusion's kernel writer: the kernel IR of one group of ops (fuse.c
 * decides the groups), built through kir.c's builder.
 *
 * Values are computed by recursive emission at a multi-index: a member is computed
 * in registers, a constant (FULL, ARANGE, CAUSAL_MASK) is computed inline, a view
 * (a shape op its consumers read as an index remap) is computed where it is read,
 * anything else is loaded from its buffer. Each value at an index is emitted once
 * per kernel (a memo keyed by op, tag and index). An elementwise group stores one
 * element per outer iteration; a row group one row, its reductions as inner loops
 * and its domain-sized values in one inner loop: those that need none of the row's
 * reductions and that a reduction reads, in a first loop, which the later loops load
 * (emit_early_stores, fuse_rows.c: the memo does not reach across loops, so each loop
 * would compute them again).
 *
 * Where the ops of the next issues go: an elementwise op (sin, cos, floor, silu, %)
 * is a case of emit_unary or emit_binary; a reduction or scan along an axis (argmax,
 * topk, cumsum) a row op (its domain in fuse_red_spec, its category in fuse_cat, its
 * loop through emit_reduce); an index remap (gather, one_hot, repeat, expand, stack)
 * a function beside emit_slice and emit_concat. sdpa is GEMM steps (fuse.c) around
 * kernels made here; conv2d is its patches (IM2COL) and a matmul. The section for the shape ops can become a file
 * of its own when this one grows past its limit. The ops that index by data or by
 * order (gather, one_hot, im2col and their gradients, argmax, topk, cumsum, the
 * run-time CHECK) are written in fuse_index.c, through the small interface at the end
 * of this file (fuse_int.h); this file dispatches to it.
 *
 * Invariants: float arithmetic follows the unfused ops one by one (same operations,
 * same order), so fusion never changes bits; the op categories and reduction domains
 * at the top are fuse.c's too (it calls down into this file, never the reverse).
 */
#include "fuse_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- op categories and reduction domains (fuse.c's too) -------------------------- */

Cat fuse_cat(OpKind k) {
  switch (k) {
  case OP_INPUT: case OP_PARAM: return CAT_LEAF;
  case OP_FULL: case OP_ARANGE: case OP_CAUSAL_MASK: return CAT_CONST;
  case OP_SUM: case OP_MEAN: case OP_AMAX: case OP_SUM_TO: case OP_SOFTMAX: case OP_LOG_SOFTMAX:
  case OP_CE_GRAD: case OP_CE_ROWS: return CAT_RED;
  case OP_ARGMAX: case OP_CHECK: case OP_COL2IM: return CAT_RED;                            /* fuse_index.c */
  case OP_CUMSUM: case OP_CUMSUM_REV: case OP_TOPK: case OP_GATHER_GRAD: return CAT_SPECIAL; /* fuse_index.c */
  case OP_MATMUL: return CAT_GEMM;
  case OP_SDPA: case OP_SDPA_GRAD: return CAT_ATTN; /* a step of its own (issue 14) */
  case OP_CE_FUSED: case OP_EMBEDDING_GRAD: return CAT_ATTN; /* steps of their own too (lower_ce, lower_emb_grad) */
  case OP_RESULT: return CAT_RESULT;               /* written by its op's step */
  case OP_SEND: case OP_RECV: case OP_ALLREDUCE: case OP_ALLGATHER: case OP_TP_ENTER: case OP_TP_SLICE: case OP_REDUCE_SCATTER:
    return CAT_COMM;
  default: return CAT_EW; /* elementwise, shape ops, EMBEDDING, DROPOUT, CROSS_ENTROPY, PARAM_GRAD */
  }
}


int fuse_norm_axis(int axis, int rank) {
  int a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) die("fuse: axis %d out of range for rank %d", axis, rank);
  return a;
}

int64_t fuse_kept_numel(const Shape *d, const bool *red) {
  int64_t n = 1;
  for (int i = 0; i < d->rank; i++)
    if (!red[i]) n *= d->d[i];
  return n;
}

/* The domain and reduced axes of a reduction-like op. */
void fuse_red_spec(const Fuse *f, const Op *op, Shape *dom, bool *red) {
  const Shape *in = &OPP(f, op->in[0])->shape;
  memset(red, 0, sizeof(bool) * MPL_MAX_RANK);
  *dom = *in;
  switch (op->kind) {
  case OP_SUM: case OP_MEAN: case OP_AMAX: case OP_SOFTMAX: case OP_LOG_SOFTMAX:
    if (op->axis == AXIS_ALL)
      for (int i = 0; i < in->rank; i++) red[i] = true;
    else red[fuse_norm_axis(op->axis, in->rank)] = true;
    break;
  case OP_CE_GRAD: case OP_CE_ROWS: red[in->rank - 1] = true; break;
  case OP_ARGMAX: case OP_CHECK: case OP_COL2IM: fuse_index_red_spec(f, op, dom, red); break;
  case OP_SUM_TO: {
    int lead = in->rank - op->shape.rank;
    if (lead < 0) die("fuse: %%%d sum_to to a higher rank", op->id);
    for (int i = 0; i < in->rank; i++)
      red[i] = i < lead || (op->shape.d[i - lead] == 1 && in->d[i] != 1);
    break;
  }
  default: die("fuse: %s is not a reduction", op_name(op->kind));
  }
}

/* ---- emission context ------------------------------------------------------------------ */

enum { MEMO_KEY = 3 + MPL_MAX_RANK };

struct Emit {
  const Fuse *f;
  const Group *gr;
  KBuilder *b;
  int *argof;    /* value id -> argument index, -1 */
  int *argval;   /* argument index -> value id */
  int nargs, argcap;
  int *memo;     /* open addressing: [key..., value] rows */
  int mcap, mn;
  bool *early;   /* value id -> stored by the row group's first loop: later loops load it */
};

typedef int Idx[MPL_MAX_RANK];

static uint64_t memo_hash(const int *key) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < MEMO_KEY; i++) h = (h ^ (uint32_t)key[i]) * 1099511628211ull;
  return h;
}

static void memo_key(int *key, int op, int tag, int rank, const int *idx) {
  memset(key, 0xff, sizeof(int) * MEMO_KEY);
  key[0] = op, key[1] = tag, key[2] = rank;
  for (int i = 0; i < rank; i++) key[3 + i] = idx[i];
}

static int *memo_slot(Emit *e, const int *key) {
  uint64_t mask = (uint64_t)e->mcap - 1, h = memo_hash(key) & mask;
  for (;; h = (h + 1) & mask) {
    int *row = e->memo + h * (MEMO_KEY + 1);
    if (row[0] == -1 || memcmp(row, key, sizeof(int) * MEMO_KEY) == 0) return row;
  }
}

static void memo_grow(Emit *e);

static int memo_get(Emit *e, int op, int tag, int rank, const int *idx) {
  int key[MEMO_KEY];
  memo_key(key, op, tag, rank, idx);
  int *row = memo_slot(e, key);
  if (row[0] == -1 || !kb_visible(e->b, row[MEMO_KEY])) return -1;
  return row[MEMO_KEY];
}

static int memo_put(Emit *e, int op, int tag, int rank, const int *idx, int val) {
  int key[MEMO_KEY];
  memo_key(key, op, tag, rank, idx);
  int *row = memo_slot(e, key);
  if (row[0] == -1) e->mn++;
  memcpy(row, key, sizeof key);
  row[MEMO_KEY] = val;
  if (e->mn * 2 > e->mcap) memo_grow(e);
  return val;
}

static void memo_grow(Emit *e) {
  int *old = e->memo, ocap = e->mcap;
  e->mcap *= 2;
  e->memo = malloc(sizeof(int) * (size_t)e->mcap * (MEMO_KEY + 1));
  if (!e->memo) die("out of memory");
  memset(e->memo, 0xff, sizeof(int) * (size_t)e->mcap * (MEMO_KEY + 1));
  for (int i = 0; i < ocap; i++) {
    int *row = old + i * (MEMO_KEY + 1);
    if (row[0] == -1) continue;
    memcpy(memo_slot(e, row), row, sizeof(int) * (MEMO_KEY + 1));
  }
  free(old);
}

/* The kernel argument of value v (added on first use). */
static int arg_of(Emit *e, int v, KArgMode mode) {
  if (e->argof[v] >= 0) return e->argof[v];
  const Op *op = OPP(e->f, v);
  int i = kb_add_arg(e->b, op->dtype, mode, shape_numel(&op->shape));
  if (i >= e->argcap) {
    e->argcap = e->argcap ? e->argcap * 2 : 16;
    e->argval = realloc(e->argval, sizeof(int) * (size_t)e->argcap);
    if (!e->argval) die("out of memory");
  }
  e->argval[i] = v;
  e->argof[v] = i;
  e->nargs = i + 1;
  return i;
}

/* ---- index arithmetic ------------------------------------------------------------------------ */

static int I(Emit *e, int64_t v) { return kb_int(e->b, KT_I64, v); }
static int IADD(Emit *e, int x, int y) { return kb_bin(e->b, KI_ADD, KT_I64, x, y); }
static int IMUL(Emit *e, int x, int64_t c) { return kb_bin(e->b, KI_MUL, KT_I64, x, I(e, c)); }

static int linearize(Emit *e, const Shape *s, const int *idx) {
  int lin = I(e, 0);
  for (int i = 0; i < s->rank; i++) lin = IADD(e, IMUL(e, lin, s->d[i]), idx[i]);
  return lin;
}

static void delinearize(Emit *e, const Shape *s, int lin, int *idx) {
  for (int i = s->rank - 1; i >= 0; i--) {
    idx[i] = kb_bin(e->b, KI_REM, KT_I64, lin, I(e, s->d[i]));
    lin = kb_bin(e->b, KI_DIV, KT_I64, lin, I(e, s->d[i]));
  }
}

/* The index into `in` broadcast NumPy-style to `out` at out's index. */
static void bcast_idx(Emit *e, const Shape *in, const Shape *out, const int *idx, int *iidx) {
  for (int i = 0; i < in->rank; i++)
    iidx[i] = in->d[i] == 1 ? I(e, 0) : idx[out->rank - in->rank + i];
}

static int clamp_idx(Emit *e, int x, int64_t n) {
  int lo = kb_bin(e->b, KI_MAX, KT_I64, x, I(e, 0));
  return kb_bin(e->b, KI_MIN, KT_I64, lo, I(e, n - 1));
}

static int max_depth(Emit *e, const int *idx, int n) {
  int d = 0;
  for (int i = 0; i < n; i++)
    if (idx[i] >= 0 && kb_depth(e->b, idx[i]) > d) d = kb_depth(e->b, idx[i]);
  return d;
}

/* ---- values ------------------------------------------------------------------------------ */

static int emit(Emit *e, int v, const int *idx);

static int F(Emit *e, float x) { return kb_f32(e->b, x); }
static int FB(Emit *e, KiOp op, int x, int y) { return kb_bin(e->b, op, KT_F32, x, y); }
static int FU(Emit *e, KiOp op, int x) { return kb_un(e->b, op, KT_F32, x); }
static int CMP(Emit *e, KiOp op, int x, int y) { return kb_bin(e->b, op, KT_BOOL, x, y); }

/* Input j of op at the op's index, broadcast. */
static int emit_in(Emit *e, const Op *op, int j, const int *idx) {
  Idx ii;
  bcast_idx(e, &OPP(e->f, op->in[j])->shape, &op->shape, idx, ii);
  return emit(e, op->in[j], ii);
}

/*
 * A reduction over the reduced axes of dom at the row given by the kept entries of
 * row_idx, memoised as (op, tag, row). The loop is placed at the depth of the row's
 * index values (hoisted out of any loop it does not depend on).
 */
static int emit_reduce(Emit *e, const Op *op, int tag, const Shape *dom, const bool *red, const int *row_idx,
                       KRed kind, KType t, ElemFn fn, const int *cap) {
  int r = memo_get(e, op->id, tag, dom->rank, row_idx);
  if (r >= 0) return r;
  int64_t n = 1;
  Shape rs = {0};
  for (int i = 0; i < dom->rank; i++)
    if (red[i]) n *= dom->d[i], rs.d[rs.rank++] = dom->d[i];
  int init = kind == KR_MAX ? (t == KT_F32 ? F(e, -INFINITY) : kb_int(e->b, t, t == KT_I32 ? INT32_MIN : 0))
                            : (t == KT_F32 ? F(e, 0.0f) : kb_int(e->b, t, 0));
  int depth = max_depth(e, row_idx, dom->rank);
  if (cap) depth = cap[0] > depth ? cap[0] : depth; /* cap[0]: depth of captured values */
  int loop = kb_loop_begin(e->b, n, kind, t, init, depth);
  int k = kb_loopvar(e->b, loop), kidx[MPL_MAX_RANK];
  Idx full;
  delinearize(e, &rs, k, kidx);
  for (int i = 0, j = 0; i < dom->rank; i++) full[i] = red[i] ? kidx[j++] : row_idx[i];
  int x = fn(e, op, full, cap);
  kb_loop_end(e->b, loop, x);
  return memo_put(e, op->id, tag, dom->rank, row_idx, loop);
}

static int elem_input(Emit *e, const Op *op, const int *dom_idx, const int *cap) {
  return emit(e, op->in[0], dom_idx);
}

/* The kept domain index of a reduction op's output index (reduced entries -1). */
static void red_row_idx(Emit *e, const Op *op, const Shape *dom, const bool *red, const int *idx, int *row) {
  int lead = dom->rank - op->shape.rank;
  bool keep = op->kind == OP_SUM_TO || op->shape.rank == dom->rank;
  for (int i = 0, j = 0; i < dom->rank; i++) {
    if (keep) {
      row[i] = red[i] ? -1 : idx[i - lead];
    } else {
      row[i] = red[i] ? -1 : idx[j];
      j += !red[i];
    }
  }
}

static int emit_sum_like(Emit *e, const Op *op, const int *idx) {
  Shape dom;
  bool red[MPL_MAX_RANK];
  Idx row;
  fuse_red_spec(e->f, op, &dom, red);
  red_row_idx(e, op, &dom, red, idx, row);
  KType t = kt_of_dtype(op->dtype);
  int r = emit_reduce(e, op, 3, &dom, red, row, op->kind == OP_AMAX ? KR_MAX : KR_SUM, t, elem_input, NULL);
  if (op->kind == OP_MEAN) r = FB(e, KI_DIV, r, F(e, (float)(shape_numel(&dom) / fuse_kept_numel(&dom, red))));
  return r;
}

/* exp(x - m) at a domain index; cap = {depth, m}. */
static int elem_exp_sub(Emit *e, const Op *op, const int *dom_idx, const int *cap) {
  return FU(e, KI_EXP, FB(e, KI_SUB, emit(e, op->in[0], dom_idx), cap[1]));
}

/* Row max m and sum s of exp(x - m) over the reduced axes: softmax, log_softmax, ce_grad. */
static void emit_row_stats(Emit *e, const Op *op, const int *idx, int *m, int *s) {
  Shape dom;
  bool red[MPL_MAX_RANK];
  Idx row;
  fuse_red_spec(e->f, op, &dom, red);
  for (int i = 0; i < dom.rank; i++) row[i] = red[i] ? -1 : idx[i];
  *m = emit_reduce(e, op, 1, &dom, red, row, KR_MAX, KT_F32, elem_input, NULL);
  int cap[2] = {kb_depth(e->b, *m), *m};
  *s = emit_reduce(e, op, 2, &dom, red, row, KR_SUM, KT_F32, elem_exp_sub, cap);
}

static int emit_softmax(Emit *e, const Op *op, const int *idx) {
  int m, s;
  emit_row_stats(e, op, idx, &m, &s);
  int d = FB(e, KI_SUB, emit(e, op->in[0], idx), m);
  if (op->kind == OP_SOFTMAX) return FB(e, KI_DIV, FU(e, KI_EXP, d), s);
  return FB(e, KI_SUB, d, FU(e, KI_LOG, s));
}

/* The target class of a row as a clamped i64. */
static int emit_target(Emit *e, const Op *op, const int *row_idx, int64_t classes) {
  int t = emit(e, op->in[1], row_idx);
  return clamp_idx(e, kb_un(e->b, KI_CAST, KT_I64, t), classes);
}

/* CE_GRAD: ((softmax(x) - onehot(t)) * g) / rows, at a logits index. */
static int emit_ce_grad(Emit *e, const Op *op, const int *idx) {
  const Shape *ls = &OPP(e->f, op->in[0])->shape;
  int64_t c = ls->d[ls->rank - 1], rows = shape_numel(ls) / c;
  int m, s;
  emit_row_stats(e, op, idx, &m, &s);
  int p = FB(e, KI_DIV, FU(e, KI_EXP, FB(e, KI_SUB, emit(e, op->in[0], idx), m)), s);
  int t = emit_target(e, op, idx, c);
  int hot = kb_select(e->b, CMP(e, KI_EQ, t, idx[ls->rank - 1]), F(e, 1.0f), F(e, 0.0f));
  int g = emit_in(e, op, 2, idx);
  return FB(e, KI_DIV, FB(e, KI_MUL, FB(e, KI_SUB, p, hot), g), F(e, (float)rows));
}

/* One row's loss -log_softmax(x)[t] at a row index: CE_ROWS. */
static int emit_ce_row(Emit *e, const Op *op, const int *row_idx) {
  const Shape *ls = &OPP(e->f, op->in[0])->shape;
  int r = ls->rank, m, s;
  Idx full;
  emit_row_stats(e, op, row_idx, &m, &s);
  memcpy(full, row_idx, sizeof(int) * (size_t)(r - 1));
  full[r - 1] = emit_target(e, op, row_idx, ls->d[r - 1]);
  int xt = emit(e, op->in[0], full);
  return FU(e, KI_NEG, FB(e, KI_SUB, FB(e, KI_SUB, xt, m), FU(e, KI_LOG, s)));
}

/* The loss of one row of a CROSS_ENTROPY: its CE_ROWS value (cap: {depth, CE_ROWS id}). */
static int elem_ce_loss(Emit *e, const Op *op, const int *row_idx, const int *cap) {
  return emit(e, cap[1], row_idx);
}

/* CROSS_ENTROPY: the mean over rows of the row losses (its CE_ROWS, computed by a row
 * kernel one row per outer iteration), summed in row order. */
static int emit_cross_entropy(Emit *e, const Op *op) {
  const Shape *ls = &OPP(e->f, op->in[0])->shape;
  Shape rows = {.rank = ls->rank - 1};
  bool red[MPL_MAX_RANK];
  Idx row;
  for (int i = 0; i < rows.rank; i++) rows.d[i] = ls->d[i], red[i] = true, row[i] = -1;
  int cap[2] = {0, e->f->ce_rows[op->id]};
  if (cap[1] < 0) die("fuse: %%%d cross_entropy has no row losses", op->id);
  int total = emit_reduce(e, op, 3, &rows, red, row, KR_SUM, KT_F32, elem_ce_loss, cap);
  return FB(e, KI_DIV, total, F(e, (float)shape_numel(&rows)));
}

/* splitmix64's finaliser in IR (mpl_rng.h's mpl_mix64). */
static int mix64(Emit *e, int z) {
  KBuilder *b = e->b;
  z = kb_bin(b, KI_ADD, KT_I64, z, I(e, (int64_t)0x9E3779B97F4A7C15ull));
  z = kb_bin(b, KI_MUL, KT_I64, kb_bin(b, KI_XOR, KT_I64, z, kb_bin(b, KI_SHR, KT_I64, z, I(e, 30))),
             I(e, (int64_t)0xBF58476D1CE4E5B9ull));
  z = kb_bin(b, KI_MUL, KT_I64, kb_bin(b, KI_XOR, KT_I64, z, kb_bin(b, KI_SHR, KT_I64, z, I(e, 27))),
             I(e, (int64_t)0x94D049BB133111EBull));
  return kb_bin(b, KI_XOR, KT_I64, z, kb_bin(b, KI_SHR, KT_I64, z, I(e, 31)));
}

/* DROPOUT: mpl_dropout_keep(mpl_dropout_stream(seed, step, key),
 * mpl_dropout_index(mb, numel, linear index), p); x itself in an evaluation pass (mb < 0:
 * sampling, validation). The runtime's mb is the step's micro-batch number over all
 * replicas (mpl_rng.h). A value split over tp is indexed as the whole: this rank's part
 * of the split axis (scalar 3, the tp index) placed as mpl_shard_copy places it, so every
 * tp size draws tp = 1's mask. */
static int emit_dropout(Emit *e, const Op *op, const int *idx) {
  KBuilder *b = e->b;
  int x = emit_in(e, op, 0, idx);
  int st = mix64(e, kb_scalar(b, 0));
  st = mix64(e, kb_bin(b, KI_XOR, KT_I64, st, kb_scalar(b, 1)));
  st = mix64(e, kb_bin(b, KI_XOR, KT_I64, st, I(e, op->key)));
  Shape whole = op->shape;
  Idx widx;
  memcpy(widx, idx, sizeof(int) * (size_t)op->shape.rank);
  int ax = op->layout.split_dim, tp = e->f->g->mesh.tp;
  if (ax >= 0 && tp > 1) {
    /* local l of the axis is whole q * G + tpi * chunk + c: chunk = L / groups, G = chunk * tp */
    int64_t chunk = op->shape.d[ax] / op->layout.groups;
    int q = kb_bin(b, KI_DIV, KT_I64, idx[ax], I(e, chunk)), c = kb_bin(b, KI_REM, KT_I64, idx[ax], I(e, chunk));
    widx[ax] = IADD(e, IADD(e, IMUL(e, q, chunk * tp), IMUL(e, kb_scalar(b, 3), chunk)), c);
    whole.d[ax] *= tp;
  }
  int lin = linearize(e, &whole, widx); /* a step mask: the same in every micro-batch (step_mask) */
  if (!op->step_mask) lin = kb_bin(b, KI_ADD, KT_I64, kb_bin(b, KI_MUL, KT_I64, kb_scalar(b, 2), I(e, shape_numel(&whole))), lin);
  int r = kb_bin(b, KI_SHR, KT_I64, mix64(e, kb_bin(b, KI_XOR, KT_I64, st, mix64(e, lin))), I(e, 40));
  int keep = CMP(e, KI_GE, r, I(e, (int64_t)ceil(op->value * 16777216.0)));
  int scaled = FB(e, KI_MUL, x, F(e, (float)(1.0 / (1.0 - op->value))));
  int eval = CMP(e, KI_LT, kb_scalar(b, 2), I(e, 0));
  return kb_select(b, eval, x, kb_select(b, keep, scaled, F(e, 0.0f)));
}

static int emit_gelu(Emit *e, int x) {
  const float beta = (float)(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = 0.044715f;
  int cube = FB(e, KI_MUL, FB(e, KI_MUL, x, x), x);
  int inner = FB(e, KI_MUL, F(e, beta), FB(e, KI_ADD, x, FB(e, KI_MUL, F(e, kappa), cube)));
  return FB(e, KI_MUL, FB(e, KI_MUL, F(e, 0.5f), x), FB(e, KI_ADD, F(e, 1.0f), FU(e, KI_TANH, inner)));
}

/* PyTorch's tanh-approximation gelu backward, dy * gelu'(x). */
static int emit_gelu_grad(Emit *e, int x, int dy) {
  const float beta = (float)(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = 0.044715f;
  int sq = FB(e, KI_MUL, x, x), cube = FB(e, KI_MUL, sq, x);
  int inner = FB(e, KI_MUL, F(e, beta), FB(e, KI_ADD, x, FB(e, KI_MUL, F(e, kappa), cube)));
  int t = FU(e, KI_TANH, inner);
  int left = FB(e, KI_MUL, F(e, 0.5f), x), right = FB(e, KI_ADD, F(e, 1.0f), t);
  int dleft = FB(e, KI_MUL, F(e, 0.5f), right);
  int dtanh = FB(e, KI_SUB, F(e, 1.0f), FB(e, KI_MUL, t, t));
  int dinner = FB(e, KI_MUL, F(e, beta), FB(e, KI_ADD, F(e, 1.0f), FB(e, KI_MUL, F(e, 3.0f * kappa), sq)));
  int dright = FB(e, KI_MUL, FB(e, KI_MUL, left, dtanh), dinner);
  return FB(e, KI_MUL, dy, FB(e, KI_ADD, dleft, dright));
}

static int emit_pow(Emit *e, int x, double c) {
  if (c == 1.0) return x;
  if (c == 2.0) return FB(e, KI_MUL, x, x);
  if (c == 3.0) return FB(e, KI_MUL, FB(e, KI_MUL, x, x), x);
  if (c == 0.5) return FU(e, KI_SQRT, x);
  if (c == -1.0) return FB(e, KI_DIV, F(e, 1.0f), x);
  return FB(e, KI_POW, x, F(e, (float)c));
}

static int emit_cast(Emit *e, KType to, int x) {
  KBuilder *b = e->b;
  KType from = kb_kernel(b)->ins[x].type;
  if (from == to) return x;
  if (to == KT_BOOL) {
    int zero = from == KT_F32 ? F(e, 0.0f) : kb_int(b, from, 0);
    return CMP(e, KI_NE, x, zero);
  }
  return kb_un(b, KI_CAST, to, x);
}

/*
 * x rounded to the nearest bf16 value, ties to even, as an f32 (precision = bf16): on
 * the bits u, (u + 0x7FFF + (u >> 16 & 1)) & 0xFFFF0000 (a carry into the exponent is
 * right, up to infinity); a NaN keeps its sign and top bits with the quiet bit set,
 * so it stays a NaN whose low 16 bits are 0 like every other result. Integer ops
 * only: both emitters give the same bits.
 */
static int emit_round_bf16(Emit *e, int x) {
  KBuilder *b = e->b;
  int u = kb_un(b, KI_BITCAST, KT_I32, x), hi = kb_int(b, KT_I32, (int32_t)0xFFFF0000);
  int lsb = kb_bin(b, KI_AND, KT_I32, kb_bin(b, KI_SHR, KT_I32, u, kb_int(b, KT_I32, 16)), kb_int(b, KT_I32, 1));
  int sum = kb_bin(b, KI_ADD, KT_I32, kb_bin(b, KI_ADD, KT_I32, u, kb_int(b, KT_I32, 0x7FFF)), lsb);
  int nan = kb_bin(b, KI_AND, KT_I32, kb_bin(b, KI_OR, KT_I32, u, kb_int(b, KT_I32, 0x00400000)), hi);
  int r = kb_select(b, CMP(e, KI_NE, x, x), nan, kb_bin(b, KI_AND, KT_I32, sum, hi));
  return kb_un(b, KI_BITCAST, KT_F32, r);
}

/*
 * x rounded to the nearest f16 value, ties to even, as an f32 (a program's own f16 tensors,
 * precision.c's prec_lower_half). Normal f16 range: 13 low bits dropped as emit_round_bf16
 * drops 16, u + 0xFFF + (u >> 13 & 1) masked; below 2^-14 the f16 spacing is 2^-24, so
 * (|x| + 0.75) - 0.75 (0.75's f32 spacing is 2^-24; the emitters never contract or
 * reassociate) rounds to it, x's sign put back (-0 stays -0); past 65504 (the rounded
 * magnitude reaches 2^16) infinite, with x's sign; a NaN keeps its bits with the quiet bit set.
 */
static int emit_round_f16(Emit *e, int x) {
  KBuilder *b = e->b;
  int u = kb_un(b, KI_BITCAST, KT_I32, x), keep = kb_int(b, KT_I32, (int32_t)0xFFFFE000);
  int lsb = kb_bin(b, KI_AND, KT_I32, kb_bin(b, KI_SHR, KT_I32, u, kb_int(b, KT_I32, 13)), kb_int(b, KT_I32, 1));
  int sum = kb_bin(b, KI_ADD, KT_I32, kb_bin(b, KI_ADD, KT_I32, u, kb_int(b, KT_I32, 0xFFF)), lsb);
  int normal = kb_un(b, KI_BITCAST, KT_F32, kb_bin(b, KI_AND, KT_I32, sum, keep));
  int sign = kb_bin(b, KI_AND, KT_I32, u, kb_int(b, KT_I32, (int32_t)0x80000000));
  int ax = kb_un(b, KI_ABS, KT_F32, x);
  int sub = FB(e, KI_SUB, FB(e, KI_ADD, ax, F(e, 0.75f)), F(e, 0.75f)); /* |x| to a multiple of 2^-24 */
  sub = kb_un(b, KI_BITCAST, KT_F32, kb_bin(b, KI_OR, KT_I32, kb_un(b, KI_BITCAST, KT_I32, sub), sign)); /* x's sign, -0 too */
  int r = kb_select(b, CMP(e, KI_LT, ax, F(e, 0x1p-14f)), sub, normal);
  int inf = kb_un(b, KI_BITCAST, KT_F32, kb_bin(b, KI_OR, KT_I32, sign, kb_int(b, KT_I32, 0x7F800000)));
  r = kb_select(b, CMP(e, KI_GE, kb_un(b, KI_ABS, KT_F32, r), F(e, 65536.0f)), inf, r);
  int nan = kb_un(b, KI_BITCAST, KT_F32, kb_bin(b, KI_OR, KT_I32, u, kb_int(b, KT_I32, 0x00400000)));
  return kb_select(b, CMP(e, KI_NE, x, x), nan, r);
}

static int emit_unary(Emit *e, const Op *op, int x) {
  KType t = kt_of_dtype(op->dtype);
  switch (op->kind) {
  case OP_NEG: return kb_un(e->b, KI_NEG, t, x);
  case OP_EXP: return FU(e, KI_EXP, x);
  case OP_LOG: return FU(e, KI_LOG, x);
  case OP_SQRT: return FU(e, KI_SQRT, x);
  case OP_RSQRT: return FB(e, KI_DIV, F(e, 1.0f), FU(e, KI_SQRT, x));
  case OP_TANH: return FU(e, KI_TANH, x);
  case OP_SIGMOID: return FB(e, KI_DIV, F(e, 1.0f), FB(e, KI_ADD, F(e, 1.0f), FU(e, KI_EXP, FU(e, KI_NEG, x))));
  case OP_RELU: return t == KT_F32 ? FB(e, KI_MAX, x, F(e, 0.0f)) : kb_bin(e->b, KI_MAX, t, x, kb_int(e->b, t, 0));
  case OP_GELU: return emit_gelu(e, x);
  case OP_ABS: return kb_un(e->b, KI_ABS, t, x);
  case OP_SIGN: {
    int zero = t == KT_F32 ? F(e, 0.0f) : kb_int(e->b, t, 0);
    int one = t == KT_F32 ? F(e, 1.0f) : kb_int(e->b, t, 1), mone = t == KT_F32 ? F(e, -1.0f) : kb_int(e->b, t, -1);
    return kb_select(e->b, CMP(e, KI_GT, x, zero), one, kb_select(e->b, CMP(e, KI_LT, x, zero), mone, zero));
  }
  case OP_POW: return emit_pow(e, x, op->value);
  case OP_CAST: return emit_cast(e, t, x);
  case OP_NOT: return kb_un(e->b, KI_NOT, KT_BOOL, x);
  case OP_SIN: return FU(e, KI_SIN, x);
  case OP_COS: return FU(e, KI_COS, x);
  case OP_FLOOR: return FU(e, KI_FLOOR, x);
  case OP_SILU: return FB(e, KI_DIV, x, FB(e, KI_ADD, F(e, 1.0f), FU(e, KI_EXP, FU(e, KI_NEG, x)))); /* PyTorch's */
  case OP_ROUND_BF16: return emit_round_bf16(e, x);
  case OP_ROUND_F16: return emit_round_f16(e, x);
  default: die("fuse: %s is not unary", op_name(op->kind));
  }
}

/*
 * torch.remainder: r = fmod(x, y) (C's % on i32), plus y where r is not 0 and its sign is
 * not y's. An i32 divisor of 0 (or -1, whose remainder is 0 and whose INT_MIN quotient
 * traps) is replaced by 1, so x % 0 is 0 and never a trap; the CHECK sema adds reports it.
 */
static int emit_rem(Emit *e, KType t, int x, int y) {
  KBuilder *b = e->b;
  int zero = t == KT_F32 ? F(e, 0.0f) : kb_int(b, t, 0), d = y;
  if (t != KT_F32) {
    int odd = kb_bin(b, KI_OR, KT_BOOL, CMP(e, KI_EQ, y, zero), CMP(e, KI_EQ, y, kb_int(b, t, -1)));
    d = kb_select(b, odd, kb_int(b, t, 1), y);
  }
  int r = kb_bin(b, KI_REM, t, x, d);
  int signs_differ = CMP(e, KI_NE, CMP(e, KI_LT, y, zero), CMP(e, KI_LT, r, zero));
  int flip = kb_bin(b, KI_AND, KT_BOOL, CMP(e, KI_NE, r, zero), signs_differ);
  return kb_select(b, flip, kb_bin(b, KI_ADD, t, r, y), r);
}

/* i32 '/' truncates toward zero; its divisors that trap (0, and -1 with an INT_MIN
 * quotient) never reach the divide: x / 0 is 0 (the CHECK sema adds reports it) and
 * x / -1 is 0 - x, wrapping at INT_MIN as torch's does. */
static int emit_idiv(Emit *e, KType t, int x, int y) {
  KBuilder *b = e->b;
  int zero = kb_int(b, t, 0), m1 = kb_int(b, t, -1);
  int by0 = CMP(e, KI_EQ, y, zero), bym1 = CMP(e, KI_EQ, y, m1);
  int d = kb_select(b, kb_bin(b, KI_OR, KT_BOOL, by0, bym1), kb_int(b, t, 1), y);
  int q = kb_select(b, bym1, kb_bin(b, KI_SUB, t, zero, x), kb_bin(b, KI_DIV, t, x, d));
  return kb_select(b, by0, zero, q);
}

static int emit_binary(Emit *e, const Op *op, int x, int y) {
  static const KiOp arith[] = {[OP_ADD] = KI_ADD, [OP_SUB] = KI_SUB, [OP_MUL] = KI_MUL, [OP_DIV] = KI_DIV,
                               [OP_MAXIMUM] = KI_MAX, [OP_MINIMUM] = KI_MIN, [OP_AND] = KI_AND, [OP_OR] = KI_OR};
  static const KiOp cmp[] = {[OP_EQ] = KI_EQ, [OP_NE] = KI_NE, [OP_LT] = KI_LT,
                             [OP_LE] = KI_LE, [OP_GT] = KI_GT, [OP_GE] = KI_GE};
  KType t = kt_of_dtype(op->dtype);
  if (op->kind == OP_DIV && t != KT_F32) return emit_idiv(e, t, x, y);
  switch (op->kind) {
  case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: case OP_MAXIMUM: case OP_MINIMUM: case OP_AND: case OP_OR:
    return kb_bin(e->b, arith[op->kind], t, x, y);
  case OP_EQ: case OP_NE: case OP_LT: case OP_LE: case OP_GT: case OP_GE: return CMP(e, cmp[op->kind], x, y);
  case OP_GELU_GRAD: return emit_gelu_grad(e, x, y);
  case OP_RELU_GRAD: /* 0 where x <= 0, else dy: a nan x passes dy, as PyTorch's threshold_backward */
    return kb_select(e->b, CMP(e, KI_LE, x, F(e, 0.0f)), F(e, 0.0f), y);
  case OP_REM: return emit_rem(e, t, x, y);
  default: die("fuse: %s is not binary", op_name(op->kind));
  }
}

/* ---- shape ops: index remaps ---------------------------------------------------------------- */

static int emit_reshape(Emit *e, const Op *op, const int *idx) {
  Idx ii;
  delinearize(e, &OPP(e->f, op->in[0])->shape, linearize(e, &op->shape, idx), ii);
  return emit(e, op->in[0], ii);
}

static int emit_transpose(Emit *e, const Op *op, const int *idx) {
  Idx ii;
  int r = op->shape.rank, a = fuse_norm_axis(op->axis, r), b2 = fuse_norm_axis(op->axis2, r);
  memcpy(ii, idx, sizeof(int) * (size_t)r);
  ii[a] = idx[b2], ii[b2] = idx[a];
  return emit(e, op->in[0], ii);
}

static int emit_slice(Emit *e, const Op *op, const int *idx) {
  Idx ii;
  int a = fuse_norm_axis(op->axis, op->shape.rank);
  memcpy(ii, idx, sizeof(int) * (size_t)op->shape.rank);
  ii[a] = IADD(e, idx[a], I(e, op->begin));
  return emit(e, op->in[0], ii);
}

/* Input j of a PAD/CONCAT placed at offset off along axis a: (inside?, value at clamped index). */
static int emit_placed(Emit *e, const Op *op, int j, int a, int64_t off, const int *idx, int *inside) {
  const Shape *is = &OPP(e->f, op->in[j])->shape;
  Idx ii;
  memcpy(ii, idx, sizeof(int) * (size_t)op->shape.rank);
  int rel = kb_bin(e->b, KI_SUB, KT_I64, idx[a], I(e, off));
  *inside = kb_bin(e->b, KI_AND, KT_BOOL, CMP(e, KI_GE, rel, I(e, 0)), CMP(e, KI_LT, rel, I(e, is->d[a])));
  ii[a] = clamp_idx(e, rel, is->d[a]);
  return emit(e, op->in[j], ii);
}

static int zero_of(Emit *e, DType dt) {
  KType t = kt_of_dtype(dt);
  return t == KT_F32 ? F(e, 0.0f) : kb_int(e->b, t, 0);
}

static int emit_pad(Emit *e, const Op *op, const int *idx) {
  int inside, a = fuse_norm_axis(op->axis, op->shape.rank);
  int v = emit_placed(e, op, 0, a, op->begin, idx, &inside);
  return kb_select(e->b, inside, v, zero_of(e, op->dtype));
}

static int emit_concat(Emit *e, const Op *op, const int *idx) {
  int a = fuse_norm_axis(op->axis, op->shape.rank), inside;
  int64_t *off = malloc(sizeof *off * (size_t)op->nin); /* (split allows 4096 parts) */
  if (!off) die("out of memory");
  off[0] = 0;
  for (int j = 1; j < op->nin; j++) off[j] = off[j - 1] + OPP(e->f, op->in[j - 1])->shape.d[a];
  int v = emit_placed(e, op, op->nin - 1, a, off[op->nin - 1], idx, &inside);
  for (int j = op->nin - 2; j >= 0; j--) {
    int x = emit_placed(e, op, j, a, off[j], idx, &inside);
    v = kb_select(e->b, inside, x, v);
  }
  free(off);
  return v;
}

/* EMBEDDING(idx, weight) at [positions..., c]: weight[clamp(idx[positions])][c]. */
static int emit_embedding(Emit *e, const Op *op, const int *idx) {
  const Shape *ws = &OPP(e->f, op->in[1])->shape;
  int r = op->shape.rank;
  int row = clamp_idx(e, kb_un(e->b, KI_CAST, KT_I64, emit(e, op->in[0], idx)), ws->d[0]);
  int wi[2] = {row, idx[r - 1]};
  return emit(e, op->in[1], wi);
}

static int emit_creation(Emit *e, const Op *op, const int *idx) {
  KType t = kt_of_dtype(op->dtype);
  switch (op->kind) {
  case OP_FULL: return t == KT_F32 ? F(e, (float)op->value) : kb_int(e->b, t, (int64_t)op->value);
  case OP_ARANGE: return emit_cast(e, t, idx[0]);
  case OP_CAUSAL_MASK: return CMP(e, KI_GE, idx[0], idx[1]);
  default: die("fuse: %s is not a creation op", op_name(op->kind));
  }
}

/* PARAM_GRAD inside a kernel: acc + value (the accumulator is the op's own buffer). */
static int emit_param_grad(Emit *e, const Op *op, const int *idx) {
  int arg = arg_of(e, op->id, KA_INOUT);
  int lin = linearize(e, &op->shape, idx);
  int acc = kb_load(e->b, arg, lin);
  return kb_bin(e->b, KI_ADD, kt_of_dtype(op->dtype), acc, emit_in(e, op, 0, idx));
}

static int emit_member(Emit *e, const Op *op, const int *idx) {
  int x[3];
  switch (op->kind) {
  case OP_SUM: case OP_MEAN: case OP_AMAX: case OP_SUM_TO: return emit_sum_like(e, op, idx);
  case OP_SOFTMAX: case OP_LOG_SOFTMAX: return emit_softmax(e, op, idx);
  case OP_CE_GRAD: return emit_ce_grad(e, op, idx);
  case OP_CROSS_ENTROPY: return emit_cross_entropy(e, op);
  case OP_CE_ROWS: return emit_ce_row(e, op, idx);
  case OP_RESHAPE: return emit_reshape(e, op, idx);
  case OP_TRANSPOSE: return emit_transpose(e, op, idx);
  case OP_SLICE: return emit_slice(e, op, idx);
  case OP_PAD: return emit_pad(e, op, idx);
  case OP_CONCAT: return emit_concat(e, op, idx);
  case OP_EXPAND: return emit_in(e, op, 0, idx);
  case OP_EMBEDDING: return emit_embedding(e, op, idx);
  case OP_DROPOUT: return emit_dropout(e, op, idx);
  case OP_PARAM_GRAD: return emit_param_grad(e, op, idx);
  case OP_GATHER: case OP_ONE_HOT: case OP_IM2COL: case OP_ARGMAX: case OP_CHECK: case OP_COL2IM:
    return fuse_index_member(e, op, idx);
  case OP_WHERE:
    for (int j = 0; j < 3; j++) x[j] = emit_in(e, op, j, idx);
    return kb_select(e->b, x[0], x[1], x[2]);
  default:
    if (op_info[op->kind].cls != OPC_E) die("fuse: cannot emit %s", op_name(op->kind));
    for (int j = 0; j < op->nin; j++) x[j] = emit_in(e, op, j, idx);
    return op->nin == 1 ? emit_unary(e, op, x[0]) : emit_binary(e, op, x[0], x[1]);
  }
}

/* Value v at its multi-index idx: computed (member, constant) or loaded. */
static int emit(Emit *e, int v, const int *idx) {
  const Op *op = OPP(e->f, v);
  int r = memo_get(e, v, 0, op->shape.rank, idx);
  if (r >= 0) return r;
  bool early = e->early && e->early[v]; /* this kernel's own store, from its first loop */
  if (fuse_cat(op->kind) == CAT_CONST) r = emit_creation(e, op, idx);
  else if ((e->f->grp[v] == e->gr->id && !early) || (e->f->view[v] && !e->f->mat[v])) r = emit_member(e, op, idx);
  else {
    if (!e->f->mat[v] && !early) die("fuse: %%%d %s read before it has a buffer", v, op_name(op->kind));
    r = kb_load(e->b, arg_of(e, v, early ? KA_OUT : KA_IN), linearize(e, &op->shape, idx));
  }
  return memo_put(e, v, 0, op->shape.rank, idx, r);
}

/* ---- what fuse_index.c uses (fuse_int.h) -------------------------------------------------------- */

KBuilder *fuse_emit_builder(Emit *e) { return e->b; }
const Fuse *fuse_emit_fuse(Emit *e) { return e->f; }
int fuse_emit_value(Emit *e, int v, const int *idx) { return emit(e, v, idx); }
int fuse_emit_arg(Emit *e, int v, KArgMode mode) { return arg_of(e, v, mode); }
int fuse_emit_linearize(Emit *e, const Shape *s, const int *idx) { return linearize(e, s, idx); }
void fuse_emit_delinearize(Emit *e, const Shape *s, int lin, int *idx) { delinearize(e, s, lin, idx); }
int fuse_emit_reduce(Emit *e, const Op *op, int tag, const Shape *dom, const bool *red, const int *row_idx,
                     KRed kind, KType t, ElemFn fn, const int *cap) {
  return emit_reduce(e, op, tag, dom, red, row_idx, kind, t, fn, cap);
}

/* ---- a group's kernel --------------------------------------------------------------------------- */

static void emit_store(Emit *e, int v, int lin, const int *idx) {
  const Op *op = OPP(e->f, v);
  int val = emit(e, v, idx);
  KArgMode mode = op->kind == OP_PARAM_GRAD ? KA_INOUT : KA_OUT;
  kb_store(e->b, arg_of(e, v, mode), lin, val);
}

/* Stores of an elementwise group: one outer iteration per element. */
static void emit_ew_group(Emit *e, const int *store, int nstore) {
  int o = kb_outer(e->b);
  for (int i = 0; i < nstore; i++) {
    Idx idx;
    delinearize(e, &OPP(e->f, store[i])->shape, o, idx);
    emit_store(e, store[i], o, idx);
  }
}

/* One loop over the row of a row group's outer iteration storing the values v[0 .. n). */
static void emit_row_stores(Emit *e, const int *v, int n) {
  const Group *gr = e->gr;
  Shape ks = {0}, rs = {0};
  for (int i = 0; i < gr->dom.rank; i++) {
    if (gr->red[i]) rs.d[rs.rank++] = gr->dom.d[i];
    else ks.d[ks.rank++] = gr->dom.d[i];
  }
  Idx kidx, ridx, dom;
  delinearize(e, &ks, kb_outer(e->b), kidx);
  int loop = kb_loop_begin(e->b, shape_numel(&rs), KR_NONE, KT_VOID, -1, 0);
  delinearize(e, &rs, kb_loopvar(e->b, loop), ridx);
  for (int i = 0, a = 0, c = 0; i < gr->dom.rank; i++) dom[i] = gr->red[i] ? ridx[a++] : kidx[c++];
  int lin = linearize(e, &gr->dom, dom);
  for (int i = 0; i < n; i++) {
    const Op *op = OPP(e->f, v[i]);
    Idx idx;
    if (shape_eq(&op->shape, &gr->dom)) memcpy(idx, dom, sizeof idx);
    else delinearize(e, &op->shape, lin, idx);
    emit_store(e, v[i], lin, idx);
  }
  kb_loop_end(e->b, loop, -1);
}

/*
 * The first loop of a row group: the values fuse_rows.c picks (stored anyway or kept for
 * the loops, needing no row statistic, read only in their own row). Each reduction's loop
 * would compute them again; stored once here, the later loops load them.
 */
static void emit_early_stores(Emit *e, const int *store, int nstore) {
  int *early = malloc(sizeof(int) * (size_t)(nstore ? nstore : 1));
  if (!early) die("out of memory");
  int n = fuse_row_early(e->f, e->gr, store, nstore, early);
  if (n > 0) {
    emit_row_stores(e, early, n);
    e->early = calloc((size_t)e->f->g->nops, 1);
    if (!e->early) die("out of memory");
    for (int i = 0; i < n; i++) e->early[early[i]] = true;
  }
  free(early);
}

/* Stores of a row group: row-sized values per outer iteration, domain-sized in one inner loop
 * (those a reduction reads in a loop before: emit_early_stores). */
static void emit_row_group(Emit *e, const int *store, int nstore) {
  const Group *gr = e->gr;
  int64_t nrow = fuse_kept_numel(&gr->dom, gr->red);
  int o = kb_outer(e->b);
  emit_early_stores(e, store, nstore);
  for (int i = 0; i < nstore; i++) {
    const Op *op = OPP(e->f, store[i]);
    if (shape_numel(&op->shape) != nrow) continue;
    Idx idx;
    delinearize(e, &op->shape, o, idx);
    emit_store(e, store[i], o, idx);
  }
  int *rest = malloc(sizeof(int) * (size_t)(nstore ? nstore : 1)), n = 0;
  if (!rest) die("out of memory");
  for (int i = 0; i < nstore; i++)
    if (shape_numel(&OPP(e->f, store[i])->shape) != nrow && !(e->early && e->early[store[i]])) rest[n++] = store[i];
  if (n > 0) emit_row_stores(e, rest, n);
  free(rest);
}

static const char *group_title(const Fuse *f, const Group *gr) {
  const Op *best = OPP(f, gr->ops[gr->n - 1]);
  for (int i = 0; i < gr->n; i++)
    if (fuse_cat(OPP(f, gr->ops[i])->kind) == CAT_RED || fuse_cat(OPP(f, gr->ops[i])->kind) == CAT_SPECIAL ||
        OPP(f, gr->ops[i])->kind == OP_CROSS_ENTROPY) {
      best = OPP(f, gr->ops[i]);
      break;
    }
  return op_name(best->kind);
}

/* The kernel of group gr that stores the members store[0 .. nstore). */
Kernel *fuse_kernel(const Fuse *f, const Group *gr, const int *store, int nstore, int **args, int *nargs,
                    int64_t *n_outer) {
  char name[96];
  snprintf(name, sizeof name, "k%d_%s", f->ks->n, group_title(f, gr));
  const Op *first = OPP(f, store[0]);
  if (fuse_index_special(first->kind)) *n_outer = fuse_index_special_outer(f, first);
  else if (gr->row) *n_outer = fuse_kept_numel(&gr->dom, gr->red);
  else *n_outer = shape_numel(&gr->dom);
  Emit e = {.f = f, .gr = gr, .b = kb_new(f->ks->arena, name, *n_outer)};
  e.argof = malloc(sizeof(int) * (size_t)f->g->nops);
  e.mcap = 256;
  e.memo = malloc(sizeof(int) * (size_t)e.mcap * (MEMO_KEY + 1));
  if (!e.argof || !e.memo) die("out of memory");
  memset(e.argof, 0xff, sizeof(int) * (size_t)f->g->nops);
  memset(e.memo, 0xff, sizeof(int) * (size_t)e.mcap * (MEMO_KEY + 1));
  if (fuse_index_special(first->kind)) fuse_index_emit_special(&e, first);
  else if (gr->row) emit_row_group(&e, store, nstore);
  else emit_ew_group(&e, store, nstore);
  Kernel *k = kb_finish(e.b);
  if (!gr->row && fuse_cat(first->kind) != CAT_SPECIAL && gr->dom.rank > 0 && gr->dom.d[gr->dom.rank - 1] > 1)
    k->inner = gr->dom.d[gr->dom.rank - 1];
  free(e.argof);
  free(e.memo);
  free(e.early);
  *args = e.argval;
  *nargs = e.nargs;
  return k;
}
