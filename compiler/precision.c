/*
 * precision.c — the precision pass (after autodiff, before the partition): under the
 * train key precision = bf16, mixed precision as torch.autocast(dtype = torch.bfloat16)
 * does it for products. Every f32 operand of every matrix product, the backward's
 * products included, is read through a ROUND_BF16 op (to nearest, ties to even), and
 * every product's result is rounded the same way before anything reads it; the products
 * themselves accumulate in f32. sdpa and conv2d are products here (conv2d is IM2COL and a
 * matmul; the lowered sdpa two batched matmuls around a softmax), so their operands, the
 * attention probabilities among them, are rounded too; the fused SDPA and SDPA_GRAD have
 * their operands and results rounded here and round the probabilities themselves
 * (copy_attention). The fused cross-entropy (ce_fuse.c) likewise: CE_FUSED reads x and w
 * rounded, its dx1 and dw1 are rounded like products' results (the loss is not), and the
 * step rounds each block of logits and of g itself; the backward's MULs by dloss compute
 * in f32 on the rounded dx1 and dw1, as every elementwise op does. Every other op
 * computes in f32 on what it reads; params, gradients and optimizer state stay f32.
 * Under f32 and tf32 the graph is returned as it is (tf32 is the GEMM steps' flag,
 * fuse.c's, for the GPU).
 *
 * Why here: after autodiff, so the backward's products are rounded like the forward's
 * and the rounding needs no gradient of its own (autocast's casts pass the gradient
 * through, rounded where the next product reads it, which is what this pass does to that
 * product); before the partition, so the new ops are cut into passes, stashed,
 * recomputed and fused like any op: a rounding joins the kernel that makes its input
 * (fuse.c), and a product's GEMM step reads the rounded buffer.
 *
 * Invariants:
 *  - the rewritten graph keeps the order [forward][backward] and the graph IR's
 *    invariants (graph_verify): a rounding is placed right before the first product
 *    that needs it, with that product's stage, phase and recompute flag, so it never
 *    reads a later value or runs in an earlier pass than the values it reads;
 *  - an activation is rounded once per stage: a later pass (the backward's products)
 *    reads the earlier pass's rounding, which the partition then stashes in place of the
 *    activation; a param or input is rounded once per (stage, pass), so no rounded copy
 *    of a weight is held from the forward to the backward;
 *  - a transpose of the last two axes read by a product is rounded below it (the
 *    transpose re-made on the rounded value), so fuse.c still folds it into the GEMM;
 *  - a value already exact in bf16 (a rounding, or a reshape, transpose, expand or slice
 *    of one) is not rounded again;
 *  - a sum of products' results that autodiff or the sharding made (SUM_TO over a
 *    broadcast batch axis, COL2IM over patches, ALLREDUCE and REDUCE_SCATTER of a
 *    row-parallel product's partial sums) adds them in f32 and is rounded once, as one
 *    product's result is.
 */
#include "fuse_int.h" /* fuse_cat: how fusion lowers a reader */

#include <stdlib.h>
#include <string.h>

/* One rounding made for a value, in the context of the products that read it. */
typedef struct Rounded {
  int stage;
  Phase phase;
  bool recompute;
  int id; /* the value products of this context read instead */
  struct Rounded *next;
} Rounded;

typedef struct Prec {
  const Graph *old;
  Graph *g;         /* the graph being built */
  int *map;         /* old id -> the new value its readers read (a product's: its rounding) */
  int *self;        /* old id -> its own copy */
  Rounded **memo;   /* new id -> the roundings made of it */
  int cap;          /* entries of memo */
} Prec;

/* Does the transpose swap the last two axes (a GEMM operand fuse.c folds)? */
static bool swaps_last_two(const Op *t) {
  int r = t->shape.rank;
  if (r < 2) return false;
  int a = t->axis < 0 ? t->axis + r : t->axis, b = t->axis2 < 0 ? t->axis2 + r : t->axis2;
  return (a == r - 1 && b == r - 2) || (a == r - 2 && b == r - 1);
}

/* The op whose values v shows: v's, or, through views (reshape, transpose, expand, slice),
 * the op beneath them. */
static const Op *beneath_views(const Graph *g, int v) {
  const Op *op = g->ops[v];
  while (op->kind == OP_RESHAPE || op->kind == OP_TRANSPOSE || op->kind == OP_EXPAND || op->kind == OP_SLICE)
    op = g->ops[op->in[0]];
  return op;
}

bool prec_exact_bf16(const Graph *g, int v) { return beneath_views(g, v)->kind == OP_ROUND_BF16; }

/* The product whose result v is (through views): a MATMUL, or the fused attention (its
 * output, or a gradient of its backward, through its RESULT); NULL if none. In the graph
 * before prec_apply. */
static const Op *product_of(const Graph *g, int v) {
  const Op *op = beneath_views(g, v);
  if (op->kind == OP_RESULT) op = g->ops[op->in[0]];
  return op->kind == OP_MATMUL || op->kind == OP_SDPA || op->kind == OP_SDPA_GRAD ? op : NULL;
}

bool prec_sdpa_bf16(const Graph *g, const Op *op) {
  return g->train.precision == PREC_BF16 ||
         (prec_exact_bf16(g, op->in[0]) && prec_exact_bf16(g, op->in[1]) && prec_exact_bf16(g, op->in[2]));
}

/* A new op of kind k on input x, placed in the context of the product `user`. */
static Op *add_like(Prec *p, OpKind k, int x, const Op *like, const Op *user) {
  Op *op = graph_add(p->g, k, 1, &x, user->loc);
  op->shape = like->shape;
  op->dtype = like->dtype;
  op->layout = like->layout;
  op->stage = user->stage, op->phase = user->phase, op->recompute = user->recompute;
  op->site = user->site, op->seg = user->seg, op->fwd_of = user->fwd_of;
  op->stage_loc = user->stage_loc;
  return op;
}

/* FWD, then BWD_B, then BWD_W: the order in which a micro-batch runs the passes. */
static int pass_rank(Phase ph) { return ph == PH_FWD ? 0 : ph == PH_BWD_B ? 1 : ph == PH_BWD_W ? 2 : 3; }

/*
 * A rounding of v that the product `user` may read: one of its stage made in its pass or,
 * when v is not a leaf, in an earlier pass (the forward's rounding of an activation is
 * what the backward keeps instead of the activation, as autocast keeps its bf16 copies).
 * A param or input is rounded again in each pass, so no copy of it is held between passes.
 */
static Rounded *memo_find(const Prec *p, int v, const Op *user) {
  const Op *op = p->g->ops[v];
  bool leaf = op->kind == OP_PARAM || op->kind == OP_INPUT;
  for (Rounded *r = p->memo[v]; r; r = r->next) {
    if (r->stage != user->stage) continue;
    if (r->phase == user->phase && r->recompute == user->recompute) return r;
    if (!leaf && pass_rank(r->phase) < pass_rank(user->phase)) return r;
  }
  return NULL;
}

/* Records made, the rounding of new value v made in `user`'s context (memo_find finds it). */
static int memo_add(Prec *p, int v, const Op *user, int made) {
  if (v >= p->cap || made >= p->cap) die("precision: memo of %d entries, value %%%d", p->cap, made > v ? made : v);
  Rounded *r = arena_alloc(p->g->arena, sizeof *r);
  *r = (Rounded){user->stage, user->phase, user->recompute, made, p->memo[v]};
  p->memo[v] = r;
  return made;
}

/* The bf16 value of new value v that the product `user` (a new op, not yet added) reads. */
static int rounded(Prec *p, int v, const Op *user) {
  Graph *g = p->g;
  const Op *op = g->ops[v];
  if (op->dtype != DT_F32 || prec_exact_bf16(g, v)) return v;
  Rounded *r = memo_find(p, v, user);
  if (r) return r->id;
  Op *made;
  if (op->kind == OP_TRANSPOSE && swaps_last_two(op)) {
    int x = rounded(p, op->in[0], user);
    made = add_like(p, OP_TRANSPOSE, x, op, user);
    made->axis = op->axis, made->axis2 = op->axis2;
  } else {
    made = add_like(p, OP_ROUND_BF16, v, op, user);
  }
  return memo_add(p, v, user, made->id);
}

/* A copy of old's settings with no ops yet, for old's ops copied one by one (map, self: old
 * ids; memo: cap new ids). */
static void prec_begin(Prec *p, Graph *old, int cap) {
  *p = (Prec){.old = old, .cap = cap};
  p->g = graph_new(old->arena);
  Graph keep = *old;
  *p->g = keep;
  p->g->ops = NULL;
  p->g->nops = p->g->cap = 0;
  p->map = malloc(sizeof(int) * (size_t)old->nops + 1);
  p->self = malloc(sizeof(int) * (size_t)old->nops + 1);
  p->memo = calloc((size_t)cap, sizeof(Rounded *));
  if (!p->map || !p->self || !p->memo) die("out of memory");
}

/* What is indexed by op id, moved to the copies' ids (self): the ops' identities and a
 * profile's measured costs. The roundings added among the forward ops shift later ids, and
 * jobgen and cost.c read these by id: under bf16 a profile's times and ranks went to other
 * ops (a relu with a product's time, 24 of 139 ops on another rank). */
static void remap_ids(Prec *p) {
  const Graph *old = p->old;
  Graph *g = p->g;
  size_t n = (size_t)g->nops + 1;
  if (old->op_key) {
    const char **key = arena_alloc(g->arena, sizeof *key * n), **label = arena_alloc(g->arena, sizeof *label * n);
    memset(key, 0, sizeof *key * n), memset(label, 0, sizeof *label * n);
    for (int i = 0; i < old->nop_keys && i < old->nops; i++)
      key[p->self[i]] = old->op_key[i], label[p->self[i]] = old->op_label ? old->op_label[i] : NULL;
    g->op_key = key, g->op_label = label, g->nop_keys = g->nops;
  }
  if (old->measured) {
    const Measured *om = old->measured;
    Measured *m = arena_alloc(g->arena, sizeof *m);
    *m = *om;
    m->nops = g->nops;
    double **arr[3] = {&m->fwd, &m->bwd_b, &m->bwd_w};
    const double *from[3] = {om->fwd, om->bwd_b, om->bwd_w};
    for (int a = 0; a < 3; a++) {
      double *x = arena_alloc(g->arena, sizeof(double) * n);
      for (size_t i = 0; i < n; i++) x[i] = -1;
      for (int i = 0; i < om->nops && i < old->nops; i++) x[p->self[i]] = from[a][i];
      *arr[a] = x;
    }
    g->measured = m;
  }
}

/* The copy, its loss mapped, its ids' tables moved, checked. */
static Graph *prec_end(Prec *p) {
  p->g->loss = p->old->loss >= 0 ? p->map[p->old->loss] : -1;
  remap_ids(p);
  free(p->map), free(p->self), free(p->memo);
  graph_verify(p->g);
  return p->g;
}

/* Copies old op src into the new graph reading in[]; PARAM_GRAD's param and fwd_of mapped. */
static Op *copy_op(Prec *p, const Op *src, const int *in) {
  Op *op = graph_copy(p->g, src, in);
  if (src->kind == OP_PARAM_GRAD) op->key = p->self[src->key];
  if (src->fwd_of >= 0) op->fwd_of = p->self[src->fwd_of];
  return op;
}

/* A product: its operands rounded, the product, its result rounded (what readers read);
 * one read only by COL2IM (conv2d's input gradient, the patches' products) is rounded
 * after their sum instead, as one convolution's result. */
static void copy_matmul(Prec *p, const Op *src, int i, bool patches) {
  Op user = *src; /* the context of the roundings of its operands */
  if (src->fwd_of >= 0) user.fwd_of = p->self[src->fwd_of];
  int in[2];
  for (int j = 0; j < 2; j++) in[j] = rounded(p, p->map[src->in[j]], &user);
  Op *mm = copy_op(p, src, in);
  p->self[i] = mm->id;
  p->map[i] = patches ? mm->id : add_like(p, OP_ROUND_BF16, mm->id, mm, mm)->id;
}

/* The fused attention (issue 14): SDPA's q, k, v and SDPA_GRAD's q, k, v and dout are read
 * rounded (out is the SDPA's rounded result already); each result but the lse is rounded
 * like a product's. The probabilities are rounded inside the step (its prec, fuse.c). A
 * RESULT reads its op itself, not the op's rounded value. */
static void copy_attention(Prec *p, const Op *src, int i) {
  Op user = *src;
  if (src->fwd_of >= 0) user.fwd_of = p->self[src->fwd_of];
  int in[6];
  bool ce = src->kind == OP_CE_FUSED;
  for (int j = 0; j < src->nin; j++) {
    bool operand = src->kind == OP_RESULT ? false : ce ? j < 2 : j < 3 || j == 5;
    in[j] = src->kind == OP_RESULT ? p->self[src->in[j]] : operand ? rounded(p, p->map[src->in[j]], &user) : p->map[src->in[j]];
  }
  Op *op = copy_op(p, src, in);
  p->self[i] = op->id;
  OpKind of = src->kind == OP_RESULT ? p->old->ops[src->in[0]]->kind : src->kind;
  bool lse = src->kind == OP_RESULT && of == OP_SDPA;
  bool loss = src->kind == OP_CE_FUSED; /* a loss, not a product's result */
  p->map[i] = lse || loss ? op->id : add_like(p, OP_ROUND_BF16, op->id, op, op)->id;
}

Graph *prec_apply(Graph *old) {
  if (old->train.precision != PREC_BF16) return old;
  int nmm = 0;
  for (int i = 0; i < old->nops; i++) {
    OpKind k = old->ops[i]->kind;
    nmm += k == OP_MATMUL || op_multi_result(k) || k == OP_RESULT || k == OP_SUM_TO || k == OP_COL2IM ||
           k == OP_ALLREDUCE || k == OP_REDUCE_SCATTER;
  }
  /* the products read only by COL2IM: 1 read by it, 2 read by another op too */
  uint8_t *col = calloc((size_t)old->nops + 1, 1);
  if (!col) die("out of memory");
  for (int i = 0; i < old->nops; i++)
    for (int j = 0; j < old->ops[i]->nin; j++) col[old->ops[i]->in[j]] |= old->ops[i]->kind == OP_COL2IM ? 1 : 2;
  Prec p;
  prec_begin(&p, old, old->nops + 5 * nmm + 1);
  for (int i = 0; i < old->nops; i++) {
    const Op *src = old->ops[i];
    if (src->kind == OP_MATMUL && src->dtype == DT_F32) {
      copy_matmul(&p, src, i, col[i] == 1);
      continue;
    }
    if (op_multi_result(src->kind) || src->kind == OP_RESULT) {
      copy_attention(&p, src, i);
      continue;
    }
    int *in = src->nin ? malloc(sizeof(int) * (size_t)src->nin) : NULL;
    if (src->nin && !in) die("out of memory");
    for (int j = 0; j < src->nin; j++) in[j] = p.map[src->in[j]];
    Op *op = copy_op(&p, src, in);
    p.map[i] = p.self[i] = op->id;
    /* a product summed further: over a broadcast batch axis (SUM_TO, a batched product's
       weight gradient, or grouped-query attention's k and v gradients over their query
       heads), over patches (COL2IM, conv2d's input gradient) or over the tp ranks (a
       row-parallel product's partial sums): the sum, in f32, is the product's result,
       rounded as one (autocast's sum_to_size of a bf16 gradient is bf16; COL2IM sums the
       patches' unrounded products, one convolution's gradient). Only a product's, over
       batch axes alone (the matrix axes kept): a bias's gradient sums a product's bf16
       gradient over its rows too, an f32 op's sum (pass 75: layer norm and linear biases'
       gradients were rounded to bf16) */
    bool sums = src->kind == OP_SUM_TO || src->kind == OP_COL2IM || src->kind == OP_ALLREDUCE ||
                src->kind == OP_REDUCE_SCATTER;
    const Op *prod = sums && src->kind != OP_COL2IM ? product_of(old, src->in[0]) : NULL;
    bool product = src->kind == OP_COL2IM ? old->ops[src->in[0]]->kind == OP_MATMUL && col[src->in[0]] == 1 : prod != NULL;
    if (product && src->kind == OP_SUM_TO) {
      const Shape *to = &src->shape, *from = &old->ops[src->in[0]]->shape;
      bool matrix = to->rank >= 2 && from->rank >= 2 && to->d[to->rank - 1] == from->d[from->rank - 1] &&
                    to->d[to->rank - 2] == from->d[from->rank - 2];
      /* a MATMUL's sum: the gradient of a broadcast operand of a product (made for it) */
      product = matrix && (prod->kind != OP_MATMUL || (src->fwd_of >= 0 && old->ops[src->fwd_of]->kind == OP_MATMUL));
    }
    if (sums && src->dtype == DT_F32 && product)
      p.map[i] = add_like(&p, OP_ROUND_BF16, op->id, op, op)->id;
    free(in);
  }
  free(col);
  return prec_end(&p);
}

/* ---- the program's own half types (after autodiff) ----------------------------------------------
 * A bf16 or f16 op becomes the same op in f32 and a rounding to its type that its readers read
 * (one pass over the ops, copying them as prec_apply does). Leaves and values made where they
 * are used (stage -1: params, inputs) are rounded in each reader's context instead,
 * once per (stage, pass), as prec_apply rounds a param; a constant (FULL: a literal, the
 * backward's 1/n) only where a comparison reads it, as PyTorch takes a Python number (in f32
 * by arithmetic). A gradient accumulator stays f32 (the sum of rounded gradients); ops that
 * only move or select values (views, neg, abs) need no rounding. */

static bool half(DType t) { return t == DT_BF16 || t == DT_F16; }

static bool exact_in_kind(OpKind k) {
  switch (k) {
  case OP_RESHAPE: case OP_TRANSPOSE: case OP_EXPAND: case OP_SLICE: case OP_CONCAT: case OP_PAD:
  case OP_NEG: case OP_ABS: case OP_PARAM_GRAD: return true;
  default: return false;
  }
}

typedef struct Half {
  Prec p;          /* the copy (its memo: the rounding of a leaf per reader context) */
  DType *type;     /* new id -> the half type its readers round it to (DT_F32: none, or rounded) */
} Half;

static OpKind round_kind(DType t) { return t == DT_BF16 ? OP_ROUND_BF16 : OP_ROUND_F16; }

/* The rounding of new value v (a made-where-used value of half type t) for reader `user`. */
static int half_rounded(Half *h, int v, DType t, const Op *user) {
  Rounded *r = memo_find(&h->p, v, user);
  if (r) return r->id;
  int made = memo_add(&h->p, v, user, add_like(&h->p, round_kind(t), v, h->p.g->ops[v], user)->id);
  h->type[made] = DT_F32;
  return made;
}

Graph *prec_lower_half(Graph *old) {
  int nhalf = 0;
  for (int i = 0; i < old->nops; i++) nhalf += half(old->ops[i]->dtype);
  if (!nhalf) return old;
  /* at most each op, its rounding and one rounding per (reader, input) of a leaf: 3 per op */
  Half h;
  prec_begin(&h.p, old, 3 * old->nops + 1);
  h.type = malloc(sizeof(DType) * ((size_t)h.p.cap + 1));
  if (!h.type) die("out of memory");
  for (int i = 0; i < old->nops; i++) {
    const Op *src = old->ops[i];
    Op user = *src; /* the context of the roundings it reads */
    if (src->fwd_of >= 0) user.fwd_of = h.p.self[src->fwd_of];
    int *in = src->nin ? malloc(sizeof(int) * (size_t)src->nin) : NULL;
    if (src->nin && !in) die("out of memory");
    for (int j = 0; j < src->nin; j++) {
      int v = src->kind == OP_RESULT ? h.p.self[src->in[j]] : h.p.map[src->in[j]]; /* a RESULT names its op */
      const Op *x = h.p.g->ops[v];
      /* a made-where-used half value or a constant: rounded here, in this reader's context;
         a constant (a literal, the backward's 1/n) only for a comparison (a Python number
         with a PyTorch bf16 tensor: arithmetic takes it in f32, a comparison converts it) */
      bool exact = x->kind == OP_FULL && !op_is_compare(src->kind);
      in[j] = h.type[v] != DT_F32 && !exact ? half_rounded(&h, v, h.type[v], &user) : v;
    }
    Op *op = copy_op(&h.p, src, in);
    free(in);
    h.p.self[i] = op->id;
    if (op->id + 1 >= h.p.cap) die("precision: half lowering past %d values", h.p.cap);
    h.type[op->id] = DT_F32;
    h.p.map[i] = op->id;
    if (!half(src->dtype)) continue;
    op->dtype = DT_F32;
    if (exact_in_kind(src->kind)) continue;
    if (op->stage < 0 || op->kind == OP_FULL) { /* rounded where it is read */
      h.type[op->id] = src->dtype;
      continue;
    }
    Op *r = add_like(&h.p, round_kind(src->dtype), op->id, op, op);
    h.type[r->id] = DT_F32;
    h.p.map[i] = r->id;
  }
  free(h.type);
  return prec_end(&h.p);
}

/* ---- bf16 storage (after the partition) ---------------------------------------------------------
 * A rounding holds bf16 values, so 2 bytes of each 4 are zero: it is stored as bf16 (DT_BF16: 2
 * bytes, widened to f32 where a kernel loads it) when every reader can read that. A class is a
 * ROUND_BF16 op with the views made of it (reshape, transpose, expand, slice: one buffer, or a
 * copy of its elements); the class is stored in bf16, whole, or not at all. Its readers may be
 * kernels (elementwise ops, reductions, the index kernels), matrix products whose other
 * operand is a bf16 class too (a GEMM reads both operands in one type: cuBLAS has no mixed
 * bf16 x f32 product), the fused attention when all its inputs are (q, k, v; the backward's
 * out and dout too) and the fused cross-entropy when x and w both are; not collectives,
 * results, gradient accumulators, another stage (a transfer), or the runtime (loss, logits).
 * Demoting a class can demote the classes read beside it, so it runs to a fixed point. */

static bool narrow_view(OpKind k) { return k == OP_RESHAPE || k == OP_TRANSPOSE || k == OP_EXPAND || k == OP_SLICE; }

/* The ROUND_BF16 at the root of v's class, or -1. */
static int class_root(const Graph *g, int v) {
  const Op *op = g->ops[v];
  if (op->kind == OP_ROUND_BF16) return op->dtype == DT_F32 || op->dtype == DT_BF16 ? v : -1;
  return narrow_view(op->kind) ? class_root(g, op->in[0]) : -1;
}

/* Are the inputs of u in mask (bit j: input j) all of bf16 classes still narrow? A GEMM, and
 * the fused attention, read their inputs in one type. */
static bool all_narrow(const Graph *g, const bool *wide, const Op *u, unsigned mask) {
  for (int j = 0; j < u->nin; j++) {
    if (!(mask >> j & 1)) continue;
    int r = class_root(g, u->in[j]);
    if (r < 0 || wide[r]) return false;
  }
  return true;
}

static bool reader_ok(const Graph *g, const bool *wide, int v, const Op *u) {
  if (u->stage >= 0 && g->ops[v]->stage >= 0 && u->stage != g->ops[v]->stage) return false;
  if (narrow_view(u->kind)) return true; /* a member: its own readers are checked */
  switch (fuse_cat(u->kind)) {
  case CAT_EW: return u->kind != OP_PARAM_GRAD;
  case CAT_RED: case CAT_SPECIAL: return true;
  case CAT_GEMM: return all_narrow(g, wide, u, 0x3);
  case CAT_ATTN:
    if (u->kind == OP_SDPA) return all_narrow(g, wide, u, 0x7);          /* q, k, v */
    if (u->kind == OP_SDPA_GRAD) return all_narrow(g, wide, u, 0x2F);    /* q, k, v, out, dout (not lse) */
    if (u->kind == OP_CE_FUSED) return all_narrow(g, wide, u, 0x3);      /* x, w (not the targets) */
    return false;
  default: return false;
  }
}

int prec_narrow(struct Partition *p) {
  Graph *g = p->g; /* (roundings: precision = bf16's, or a program's own bf16 values) */
  int n = g->nops;
  bool *wide = calloc((size_t)n + 1, sizeof *wide);
  int *root = malloc(sizeof(int) * ((size_t)n + 1));
  if (!wide || !root) die("out of memory");
  for (int v = 0; v < n; v++) root[v] = class_root(g, v);
  /* what the runtime reads itself, and what crosses stages */
  for (int s = 0; s < p->nstages; s++)
    for (int j = 0; j < 2; j++) {
      int v = j ? p->st[s].loss : p->st[s].logits;
      if (v >= 0 && root[v] >= 0) wide[root[v]] = true;
    }
  for (int x = 0; x < p->nxfers; x++)
    for (int i = 0; i < p->xfers[x].vals.n; i++) {
      int v = p->xfers[x].vals.v[i];
      if (root[v] >= 0) wide[root[v]] = true;
    }
  for (bool changed = true; changed;) {
    changed = false;
    for (int u = 0; u < n; u++) {
      const Op *op = g->ops[u];
      for (int j = 0; j < op->nin; j++) {
        int v = op->in[j], r = root[v];
        if (r < 0 || wide[r] || reader_ok(g, wide, v, op)) continue;
        wide[r] = changed = true;
      }
    }
  }
  int narrowed = 0;
  for (int v = 0; v < n; v++)
    if (root[v] >= 0 && !wide[root[v]] && g->ops[v]->dtype == DT_F32) {
      g->ops[v]->dtype = DT_BF16;
      narrowed++;
    }
  free(wide);
  free(root);
  return narrowed;
}
