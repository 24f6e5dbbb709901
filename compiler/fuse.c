/*
 * fuse.c — the fusion pass: every stage's passes lowered to Programs (fuse_partition),
 * one ordered list of graph ops (a pass) at a time (fuse_program): kernels (fused
 * groups of elementwise, shape and reduction ops), GEMMs, aliases (reshapes),
 * communication and gradient accumulation; and --emit=kernels (fuse_dump). This file
 * decides the groups and the steps; fuse_emit.c writes each group's kernel IR.
 *
 * Grouping is greedy in list order. A group is either elementwise (domain D, one
 * outer iteration per element) or a row group (domain D with a set of reduced
 * axes: one outer iteration per kept index, reductions as inner loops, values of
 * D's size stored by one inner loop). An op joins the open group when it reads a
 * member, or (elementwise) reads whole a value a member reads, and its size fits; reductions over the same axes of the same domain may
 * share a group (the layernorm pattern, softmax, cross-entropy gradient). A value is
 * stored iff some consumer is outside its group (or nobody consumes it), or it is a
 * costly value that several loops of a row group read (fuse_rows.c). Before
 * grouping, transposes are folded into the GEMMs that read them, a matmul feeding
 * only a gradient accumulator accumulates into it, and shape ops whose consumers are
 * all kernels of the list become views (plan_folds).
 *
 * Where the ops of the next issues go: their kernels are fuse_emit.c's (see there);
 * here only their category (fuse_cat). The fused attention (SDPA, SDPA_GRAD) is a step of
 * its own beside lower_matmul (lower_sdpa), which the runtime's devices run; the lowered
 * sdpa is two batched GEMMs around a row-softmax group; the fused cross-entropy (CE_FUSED)
 * is one too (lower_ce). conv2d needs none: sema writes it
 * as its patches (IM2COL, a kernel of fuse_index.c) times the weight, an ordinary matmul.
 *
 * Invariants: steps read only values that are external to the list or produced by
 * an earlier step; every op is lowered exactly once; fusion never changes bits.
 */
#include "fuse_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- state ----------------------------------------------------------------------- */

static int nusers(const Fuse *f, int id) { return f->ustart[id + 1] - f->ustart[id]; }

static void build_users(Fuse *f) {
  const Graph *g = f->g;
  f->ustart = arena_alloc(f->a, sizeof(int) * (size_t)(g->nops + 1));
  for (int i = 0; i < g->nops; i++)
    for (int j = 0; j < g->ops[i]->nin; j++) f->ustart[g->ops[i]->in[j] + 1]++;
  for (int i = 0; i < g->nops; i++) f->ustart[i + 1] += f->ustart[i];
  int *fill = calloc((size_t)g->nops + 1, sizeof(int));
  if (!fill) die("out of memory");
  f->users = arena_alloc(f->a, sizeof(int) * (size_t)(f->ustart[g->nops] + 1));
  for (int i = 0; i < g->nops; i++)
    for (int j = 0; j < g->ops[i]->nin; j++) {
      int u = g->ops[i]->in[j];
      f->users[f->ustart[u] + fill[u]++] = i;
    }
  free(fill);
}

static Step *add_step(Fuse *f, StepKind k, int op) {
  Program *p = f->p;
  if (p->nsteps == p->cap) {
    int cap = p->cap ? p->cap * 2 : 32;
    Step *v = arena_alloc(f->a, sizeof(Step) * (size_t)cap);
    if (p->nsteps) memcpy(v, p->steps, sizeof(Step) * (size_t)p->nsteps);
    p->steps = v;
    p->cap = cap;
  }
  Step *s = &p->steps[p->nsteps++];
  memset(s, 0, sizeof *s);
  s->kind = k;
  s->op = op;
  s->a = s->b = s->c = -1;
  s->kernel = -1;
  return s;
}

/* ---- groups ------------------------------------------------------------------------ */

static bool in_group(const Fuse *f, const Group *gr, int v) { return f->grp[v] == gr->id; }

/* Whether some consumer of v, looking through views, is outside the group. */
static bool used_outside(const Fuse *f, const Group *gr, int v) {
  for (int i = f->ustart[v]; i < f->ustart[v + 1]; i++) {
    int u = f->users[i];
    if (f->view[u] ? used_outside(f, gr, u) : !in_group(f, gr, u)) return true;
  }
  return false;
}

/* Whether member v must be written to its buffer. */
static bool needs_store(const Fuse *f, const Group *gr, int v) {
  if (OPP(f, v)->kind == OP_PARAM_GRAD) return true;
  if (nusers(f, v) == 0) return true;
  if (v == f->g->loss) return true; /* the runtime reads it (pass 83: a dead `loss * 1000.0` fused it away) */
  return used_outside(f, gr, v);
}


/* Builds the group's kernel for the members in store[] (fuse_emit.c) and adds the step. */
static void emit_kernel(Fuse *f, const Group *gr, const int *store, int nstore) {
  int *args, nargs;
  int64_t n_outer;
  Kernel *k = fuse_kernel(f, gr, store, nstore, &args, &nargs, &n_outer);
  Step *s = add_step(f, STEP_KERNEL, gr->ops[0]);
  s->kernel = kset_add(f->ks, k);
  s->nargs = nargs;
  s->args = arena_alloc(f->a, sizeof(int) * (size_t)(nargs ? nargs : 1));
  memcpy(s->args, args, sizeof(int) * (size_t)nargs);
  s->n_outer = n_outer;
  s->nsrc = gr->n;
  s->src = arena_alloc(f->a, sizeof(int) * (size_t)(gr->n ? gr->n : 1));
  memcpy(s->src, gr->ops, sizeof(int) * (size_t)gr->n);
  free(args);
}

static void materialize(Fuse *f, int v);

/*
 * RESHAPE needing a buffer: alias its input's buffer. A member input is stored, or,
 * when it is a reshape itself, aliased in turn (a chain of reshapes aliases down to
 * the first value that is not one).
 */
static void want_alias(Fuse *f, const Group *gr, int v, bool *store, bool *alias) {
  int in = OPP(f, v)->in[0];
  if (f->view[in] && !f->mat[in]) return; /* a view has no buffer to share: v is stored */
  store[v] = false;
  alias[v] = true;
  if (in_group(f, gr, in)) {
    if (OPP(f, in)->kind == OP_RESHAPE) want_alias(f, gr, in, store, alias);
    else store[in] = true;
  }
}

static void emit_aliases(Fuse *f, const Group *gr, const bool *alias) {
  for (int i = 0; i < gr->n; i++) {
    int v = gr->ops[i];
    if (!alias[v]) continue;
    int in = OPP(f, v)->in[0];
    if (!f->mat[in]) materialize(f, in);
    Step *s = add_step(f, STEP_ALIAS, v);
    s->a = v, s->b = in, s->numel = shape_numel(&OPP(f, v)->shape);
    f->mat[v] = true;
  }
}

/* Closes group gr: its kernel (if anything is stored), then aliases. */
static void close_group(Fuse *f, Group *gr) {
  if (!gr->n) return;
  bool *store = calloc((size_t)f->g->nops, 1), *alias = calloc((size_t)f->g->nops, 1);
  if (!store || !alias) die("out of memory");
  for (int i = 0; i < gr->n; i++) store[gr->ops[i]] = needs_store(f, gr, gr->ops[i]);
  /* costly values several of a row kernel's loops read: stored once, loaded by the others */
  if (gr->row) fuse_row_keep(f, gr, store);
  for (int i = gr->n - 1; i >= 0; i--) {
    int v = gr->ops[i];
    if (store[v] && OPP(f, v)->kind == OP_RESHAPE) want_alias(f, gr, v, store, alias);
  }
  int *list = malloc(sizeof(int) * (size_t)(gr->n > 0 ? gr->n : 1)), n = 0;
  if (!list) die("out of memory");
  for (int i = 0; i < gr->n; i++)
    if (store[gr->ops[i]]) list[n++] = gr->ops[i];
  if (n) emit_kernel(f, gr, list, n);
  for (int i = 0; i < n; i++) f->mat[list[i]] = true;
  emit_aliases(f, gr, alias);
  free(list);
  free(store);
  free(alias);
  gr->n = 0;
  gr->row = false;
}

static void group_push(Fuse *f, Group *gr, int v) {
  if (gr->n == gr->cap) {
    gr->cap = gr->cap ? gr->cap * 2 : 16;
    int *ops = arena_alloc(f->a, sizeof(int) * (size_t)gr->cap);
    if (gr->n) memcpy(ops, gr->ops, sizeof(int) * (size_t)gr->n);
    gr->ops = ops;
  }
  gr->ops[gr->n++] = v;
  f->grp[v] = gr->id;
}

static void group_start(Fuse *f, Group *gr, int v) {
  const Op *op = OPP(f, v);
  gr->id = f->ngroups++;
  gr->n = 0;
  gr->row = fuse_cat(op->kind) == CAT_RED;
  if (gr->row) fuse_red_spec(f, op, &gr->dom, gr->red);
  else gr->dom = op->shape;
  group_push(f, gr, v);
}

/* A constant needed as a buffer: a one-op kernel. */
static void materialize(Fuse *f, int v) {
  if (f->mat[v]) return;
  if (fuse_cat(OPP(f, v)->kind) != CAT_CONST && !f->view[v]) die("fuse: %%%d %s has no buffer when needed", v, op_name(OPP(f, v)->kind));
  Group gr = {0};
  group_start(f, &gr, v);
  close_group(f, &gr);
  f->mat[v] = true;
}

static bool reads_member(const Fuse *f, const Group *gr, const Op *op) {
  for (int j = 0; j < op->nin; j++)
    if (in_group(f, gr, op->in[j]) || (f->view[op->in[j]] && reads_member(f, gr, OPP(f, op->in[j])))) return true;
  return false;
}

/* Does elementwise op read, whole, a value outside the elementwise group gr that a member
 * reads too (a sibling: the two share the loads, and any work that hash-consing finds
 * common, such as a recomputed GELU and GELU's gradient sharing one tanh)? */
static bool shares_input(const Fuse *f, const Group *gr, const Op *op) {
  if (gr->row || fuse_cat(op->kind) != CAT_EW || op->kind == OP_PARAM_GRAD) return false;
  int64_t nd = shape_numel(&gr->dom);
  for (int j = 0; j < op->nin; j++) {
    int v = op->in[j];
    if (in_group(f, gr, v) || f->view[v] || shape_numel(&OPP(f, v)->shape) != nd) continue;
    for (int i = 0; i < gr->n; i++) {
      const Op *m = OPP(f, gr->ops[i]);
      for (int k = 0; k < m->nin; k++)
        if (m->in[k] == v) return true;
    }
  }
  return false;
}

/* The most ops a group holds. A kernel stores up to one value an op, each its own noalias
 * argument, and LLVM's alias analysis compares every pair of them against every scope: a
 * chain of 4,000 multiplies fused whole made a 448-argument kernel that took most of a
 * 3.3 s compile. No model's group comes near (the examples' largest kernels have 9
 * arguments); a longer chain is cut into kernels of this many ops, with the same bits. */
enum { FUSE_MAX_OPS = 128 };

/* Whether v (elementwise or reduction) may join the open group. */
static bool can_join(const Fuse *f, const Group *gr, const Op *op) {
  if (!gr->n || gr->n >= FUSE_MAX_OPS || f->ks->no_fusion) return false;
  if (!(reads_member(f, gr, op) || shares_input(f, gr, op))) return false;
  int64_t n = shape_numel(&op->shape), nd = shape_numel(&gr->dom);
  if (op->kind == OP_CROSS_ENTROPY) return false;
  /* a CHECK (one count of a whole tensor) would make its group one row; COL2IM's domain
     is the image and the kernel window, not its input's */
  if (op->kind == OP_CHECK || op->kind == OP_COL2IM) return false;
  if (fuse_cat(op->kind) == CAT_EW) {
    if (op->kind == OP_PARAM_GRAD && !in_group(f, gr, op->in[0])) return false;
    return n == nd || (gr->row && n == fuse_kept_numel(&gr->dom, gr->red));
  }
  Shape dom;
  bool red[MPL_MAX_RANK];
  fuse_red_spec(f, op, &dom, red);
  if (gr->row) return shape_eq(&dom, &gr->dom) && memcmp(red, gr->red, sizeof red) == 0;
  return shape_numel(&dom) == nd && fuse_trailing(&dom, red);
}

static void join(Fuse *f, Group *gr, int v) {
  const Op *op = OPP(f, v);
  if (fuse_cat(op->kind) == CAT_RED && !gr->row) {
    gr->row = true;
    fuse_red_spec(f, op, &gr->dom, gr->red);
  }
  group_push(f, gr, v);
}

/* ---- GEMMs ---------------------------------------------------------------------------------------- */

static Shape mm_view(const Shape *s, bool is_b) {
  if (s->rank >= 2) return *s;
  if (s->rank != 1) die("fuse: matmul of a rank-%d operand", s->rank);
  return is_b ? (Shape){2, {s->d[0], 1}} : (Shape){2, {1, s->d[0]}};
}

static Shape mm_batch(const Shape *s) {
  Shape b = {.rank = s->rank - 2};
  for (int i = 0; i < b.rank; i++) b.d[i] = s->d[i];
  return b;
}

/* A GEMM operand: the value read and whether it is transposed (folding a TRANSPOSE). */
static int gemm_operand(Fuse *f, int v, bool *t) {
  if (f->folded_t[v]) {
    *t = !*t;
    v = OPP(f, v)->in[0];
  }
  if (!f->mat[v]) materialize(f, v);
  return v;
}

static int64_t bcast_off(const Shape *in, const Shape *out, int64_t lin) {
  int64_t ix[MPL_MAX_RANK], off = 0;
  for (int i = out->rank - 1; i >= 0; i--) ix[i] = lin % out->d[i], lin /= out->d[i];
  for (int i = 0; i < in->rank; i++) off = off * in->d[i] + (in->d[i] == 1 ? 0 : ix[out->rank - in->rank + i]);
  return off;
}

/* Operand x's batch dim at out's batch axis j (1 where x's shape is shorter). */
static int64_t bdim(const Shape *x, const Shape *out, int j) {
  int i = j - (out->rank - x->rank);
  return i >= 0 ? x->d[i] : 1;
}

/* Is x either broadcast (all 1) or whole along out's batch axes [from, rank)? *full says which. */
static bool bcast_uniform(const Shape *x, const Shape *out, int from, bool *full) {
  bool all1 = true, same = true;
  for (int j = from; j < out->rank; j++) {
    all1 = all1 && bdim(x, out, j) == 1;
    same = same && bdim(x, out, j) == out->d[j];
  }
  *full = !all1;
  return all1 || same;
}

/* A GEMM's precision (JobStep.prec): bf16 when both operands hold bf16 values (precision.c
 * rounded them: precision = bf16, or a program's own bf16 tensors), else the job's, f32
 * under precision = bf16. */
static uint8_t gemm_prec(const Fuse *f, int a, int b) {
  PrecKind p = f->g->train.precision;
  if (prec_exact_bf16(f->g, a) && prec_exact_bf16(f->g, b)) return PREC_BF16;
  return (uint8_t)(p == PREC_BF16 ? PREC_F32 : p);
}

/*
 * A matmul as GEMM steps. The batch axes split into a prefix and the longest suffix along
 * which each operand is either broadcast (stride 0) or whole (stride one matrix): the
 * suffix is one strided-batched product, each prefix index one step with its offsets
 * ([B, KV, G, T, hs] @ [B, KV, 1, hs, T]: B*KV steps of G products each).
 */
static void lower_matmul(Fuse *f, const Op *op) {
  bool ta = op->ta, tb = op->tb;
  int a = gemm_operand(f, op->in[0], &ta), b = gemm_operand(f, op->in[1], &tb);
  Shape as = mm_view(&OPP(f, a)->shape, false), bs = mm_view(&OPP(f, b)->shape, true);
  Shape ab = mm_batch(&as), bb = mm_batch(&bs), ob;
  int ra = as.rank, rb = bs.rank;
  int64_t m = ta ? as.d[ra - 1] : as.d[ra - 2], k = ta ? as.d[ra - 2] : as.d[ra - 1];
  int64_t kb = tb ? bs.d[rb - 1] : bs.d[rb - 2], n = tb ? bs.d[rb - 2] : bs.d[rb - 1];
  if (k != kb || !shape_broadcast(&ab, &bb, &ob)) die("fuse: %%%d matmul shapes do not match", op->id);
  int from = 0;
  bool fa = false, fb = false;
  while (from < ob.rank && !(bcast_uniform(&ab, &ob, from, &fa) && bcast_uniform(&bb, &ob, from, &fb))) from++;
  if (from == ob.rank) fa = fb = false;
  int64_t nb = shape_numel(&ob), batch = 1;
  for (int j = from; j < ob.rank; j++) batch *= ob.d[j];
  int c = f->gemm_acc[op->id] >= 0 ? f->gemm_acc[op->id] : op->id;
  for (int64_t i = 0; i < nb; i += batch) {
    Step *s = add_step(f, STEP_GEMM, op->id);
    s->a = a, s->b = b, s->c = c, s->ta = ta, s->tb = tb, s->m = m, s->n = n, s->k = k;
    s->alpha = 1.0, s->beta = c != op->id ? 1.0 : 0.0;
    s->prec = gemm_prec(f, a, b);
    s->batch = batch;
    s->stride_a = fa ? m * k : 0, s->stride_b = fb ? k * n : 0, s->stride_c = m * n;
    s->off_a = bcast_off(&ab, &ob, i) * m * k, s->off_b = bcast_off(&bb, &ob, i) * k * n;
    s->off_c = i * m * n;
  }
  f->mat[op->id] = true;
  if (c != op->id) f->done[c] = true;
}

/* Transposes are not views: read inline they gather across rows in every consumer,
 * slower on the CPU than one transposing copy (measured on the attention heads). */
static bool is_view_kind(OpKind k) {
  return k == OP_RESHAPE || k == OP_SLICE || k == OP_PAD || k == OP_EXPAND || k == OP_CONCAT;
}

/*
 * A shape op is a view (computed inline, as an index remap, by each kernel that reads
 * it, like a constant) when every consumer is an elementwise or reduction op of this
 * list: then a chain of reshapes, slices and pads between kernels costs no pass over
 * memory (the q|k|v gradient: three head-merged GEMM outputs padded and added in one
 * kernel; q, k, v sliced from the fused projection by the head-split copies).
 * Shape ops do no arithmetic, so the bits are those of the materialised chain.
 */
static bool can_view(const Fuse *f, const Op *op) {
  if (f->ks->no_fusion || !is_view_kind(op->kind) || nusers(f, op->id) == 0 || f->folded_t[op->id]) return false;
  if (op->id == f->g->loss) return false; /* the runtime reads it (pass 84: a reshaped loss a dead op read) */
  for (int u = f->ustart[op->id]; u < f->ustart[op->id + 1]; u++) {
    const Op *user = OPP(f, f->users[u]);
    Cat c = fuse_cat(user->kind);
    if (f->pos[user->id] < 0 || (c != CAT_EW && c != CAT_RED) || user->kind == OP_PARAM_GRAD || f->folded_t[user->id])
      return false;
  }
  return true;
}

/* Pre-pass: transposes folded into GEMMs, matmuls accumulating straight into a gradient, views. */
static void plan_folds(Fuse *f, const int *ops, int nops) {
  for (int i = 0; i < nops; i++) {
    const Op *op = OPP(f, ops[i]);
    if (op->kind == OP_TRANSPOSE && op->shape.rank >= 2 && nusers(f, op->id) > 0 &&
        fuse_cat(OPP(f, op->in[0])->kind) != CAT_CONST) {
      int r = op->shape.rank, a = fuse_norm_axis(op->axis, r), b = fuse_norm_axis(op->axis2, r);
      bool ok = (a == r - 1 && b == r - 2) || (a == r - 2 && b == r - 1);
      for (int u = f->ustart[op->id]; ok && u < f->ustart[op->id + 1]; u++) {
        const Op *user = OPP(f, f->users[u]);
        ok = user->kind == OP_MATMUL && f->pos[user->id] >= 0 && OPP(f, user->in[0])->shape.rank >= 2 &&
             OPP(f, user->in[1])->shape.rank >= 2;
      }
      f->folded_t[op->id] = ok;
    }
    if (op->kind == OP_MATMUL && nusers(f, op->id) == 1) {
      const Op *pg = OPP(f, f->users[f->ustart[op->id]]);
      Shape as = mm_view(&OPP(f, op->in[0])->shape, false), bs = mm_view(&OPP(f, op->in[1])->shape, true);
      bool batch1 = shape_numel(&as) * shape_numel(&bs) > 0 && as.rank == 2 && bs.rank == 2;
      if (pg->kind == OP_PARAM_GRAD && f->pos[pg->id] >= 0 && batch1 && pg->dtype == DT_F32 &&
          shape_numel(&pg->shape) == shape_numel(&op->shape))
        f->gemm_acc[op->id] = pg->id;
    }
  }
  for (int i = nops - 1; i >= 0; i--) f->view[ops[i]] = can_view(f, OPP(f, ops[i]));
}

/* ---- the driver -------------------------------------------------------------------------------------- */

static void need_buffer(Fuse *f, int v) {
  if (!f->mat[v]) materialize(f, v);
}

static void lower_accum(Fuse *f, const Op *op) {
  need_buffer(f, op->in[0]);
  Step *s = add_step(f, STEP_ACCUM, op->id);
  s->a = op->id, s->b = op->in[0], s->numel = shape_numel(&op->shape);
}

/*
 * The fused attention (issue 14): one step, forward (SDPA: q, k, v -> out and its RESULT 1,
 * the lse) or backward (SDPA_GRAD: q, k, v, out, lse, dout -> dq and its RESULTs 1 and 2,
 * dk and dv), with the shapes flattened to [B, H, T, hs]. Under precision = bf16 the step
 * rounds the probabilities (its operands come rounded from precision.c).
 */
static void lower_sdpa(Fuse *f, const Op *op) {
  bool bwd = op->kind == OP_SDPA_GRAD;
  int nres = bwd ? 3 : 2, n = 0, args[9];
  for (int j = 0; j < op->nin; j++) {
    need_buffer(f, op->in[j]);
    args[n++] = op->in[j];
  }
  for (int r = 0; r < nres; r++) {
    int v = r ? graph_result(f->g, op->id, r) : op->id;
    if (v < 0 || f->pos[v] < 0) die("fuse: %%%d %s: result %d is not in its pass", op->id, op_name(op->kind), r);
    args[n++] = v;
    f->mat[v] = true;
  }
  const Shape *q = &OPP(f, op->in[0])->shape, *k = &OPP(f, op->in[1])->shape, *v = &OPP(f, op->in[2])->shape;
  int rk = q->rank;
  Step *s = add_step(f, bwd ? STEP_SDPA_BWD : STEP_SDPA, op->id);
  s->nargs = n;
  s->args = arena_alloc(f->a, sizeof(int) * (size_t)n);
  memcpy(s->args, args, sizeof(int) * (size_t)n);
  s->heads = q->d[rk - 3], s->kv_heads = k->d[rk - 3], s->m = q->d[rk - 2], s->n = k->d[rk - 2];
  s->k = q->d[rk - 1], s->hv = v->d[rk - 1];
  s->batch = shape_numel(q) / (s->heads * s->m * s->k);
  s->alpha = op->value, s->causal = op->causal;
  s->prec = prec_sdpa_bf16(f->g, op) ? PREC_BF16 : f->g->train.precision == PREC_TF32 ? PREC_TF32 : PREC_F32;
}

/*
 * The fused cross-entropy (issue 14, item 3; ce_fuse.c): one step, CE_FUSED (x, w, targets ->
 * the loss and its RESULTs 1 and 2, dx1 and dw1: the gradient for dloss = 1), x flattened to
 * [N, K]. The device runs it over blocks of `chunk` rows (mpl_ce_block_rows), so that its
 * scratch, one [chunk, V] block of f32 logits, stays within MPL_CE_SCRATCH bytes
 * (runtime/job.h); the block is the compiler's choice, so the bits do not depend on the device (dw1 is summed
 * block after block). Under precision = bf16 the step rounds each block of logits and of g
 * (its operands come rounded from precision.c). The backward has no step of its own: its
 * MULs by dloss are ordinary kernels.
 */
void fuse_ce_sizes(const Graph *g, const Op *op, int64_t *m, int64_t *k, int64_t *n, int64_t *chunk) {
  const Shape *x = &g->ops[op->in[0]]->shape, *w = &g->ops[op->in[1]]->shape;
  *k = x->d[x->rank - 1], *m = shape_numel(x) / *k, *n = w->d[op->tb ? 0 : 1];
  *chunk = mpl_ce_block_rows(*m, *n);
}

static void lower_ce(Fuse *f, const Op *op) {
  int n = 0, args[6];
  for (int j = 0; j < op->nin; j++) {
    need_buffer(f, op->in[j]);
    args[n++] = op->in[j];
  }
  for (int r = 0; r < 3; r++) {
    int v = r ? graph_result(f->g, op->id, r) : op->id;
    if (v < 0 || f->pos[v] < 0) die("fuse: %%%d %s: result %d is not in its pass", op->id, op_name(op->kind), r);
    args[n++] = v;
    f->mat[v] = true;
  }
  Step *s = add_step(f, STEP_CE, op->id);
  s->nargs = n;
  s->args = arena_alloc(f->a, sizeof(int) * (size_t)n);
  memcpy(s->args, args, sizeof(int) * (size_t)n);
  fuse_ce_sizes(f->g, op, &s->m, &s->k, &s->n, &s->chunk);
  s->tb = op->tb;
  s->prec = f->g->train.precision == PREC_BF16 ? PREC_BF16 : PREC_F32;
}

/*
 * An embedding's gradient (EMBEDDING_GRAD: idx, dy -> [rows, cols]): a step of its own, which
 * each device runs its way with the same additions in the same order (device.h's
 * MplEmbGrad): the CPU a block of columns per thread, contiguous; a GPU a block per row
 * named, walking the positions (runtime/cuda/embed.cu), not a thread per column walking every
 * position, one after another. dy is read from its buffer (not computed where it is read).
 */
static void lower_emb_grad(Fuse *f, const Op *op) {
  Step *s = add_step(f, STEP_EMB_GRAD, op->id);
  s->nargs = 3;
  s->args = arena_alloc(f->a, sizeof(int) * 3);
  for (int j = 0; j < 2; j++) {
    need_buffer(f, op->in[j]);
    s->args[j] = op->in[j];
  }
  s->args[2] = op->id;
  f->mat[op->id] = true;
  s->m = shape_numel(&OPP(f, op->in[0])->shape), s->k = op->shape.d[0], s->n = op->shape.d[1];
}

static void lower_one(Fuse *f, int v) {
  const Op *op = OPP(f, v);
  Group *gr = &f->cur;
  switch (fuse_cat(op->kind)) {
  case CAT_LEAF: return;
  case CAT_CONST: return; /* computed inline where used; materialized on demand */
  case CAT_GEMM:
    close_group(f, gr);
    if (!f->folded_t[v]) lower_matmul(f, op);
    return;
  case CAT_ATTN:
    close_group(f, gr);
    if (op->kind == OP_CE_FUSED) lower_ce(f, op);
    else if (op->kind == OP_EMBEDDING_GRAD) lower_emb_grad(f, op);
    else lower_sdpa(f, op);
    return;
  case CAT_RESULT: return; /* its op's step writes it */
  case CAT_COMM:
    close_group(f, gr);
    for (int j = 0; j < op->nin; j++) need_buffer(f, op->in[j]);
    add_step(f, STEP_COMM, v);
    f->mat[v] = true;
    return;
  case CAT_SPECIAL:
    close_group(f, gr);
    group_start(f, gr, v);
    close_group(f, gr);
    return;
  case CAT_EW:
    if (op->kind == OP_CROSS_ENTROPY) lower_one(f, f->ce_rows[v]);
    if (op->kind == OP_TRANSPOSE && f->folded_t[v]) return;
    if (f->view[v]) return; /* computed where it is read */
    if (op->kind == OP_PARAM_GRAD && f->done[v]) return;
    if (op->kind == OP_PARAM_GRAD && !in_group(f, gr, op->in[0])) {
      lower_accum(f, op);
      return;
    }
    /* fallthrough */
  case CAT_RED:
    if (can_join(f, gr, op)) {
      join(f, gr, v);
      return;
    }
    close_group(f, gr);
    group_start(f, gr, v);
    return;
  }
}

/*
 * The CE_ROWS temporary of a CROSS_ENTROPY (added to g on first use, found after): the
 * loss of each position, so that the loss is a row kernel with one outer iteration per
 * position plus a sum of those losses in position order, the same bits as one loop.
 */
static int ce_rows_of(Graph *g, int ce) {
  for (int i = ce + 1; i < g->nops; i++)
    if (g->ops[i]->kind == OP_CE_ROWS && g->ops[i]->key == ce) return i;
  const Op *op = g->ops[ce];
  Op *t = graph_add(g, OP_CE_ROWS, 2, op->in, op->loc);
  const Shape *ls = &g->ops[op->in[0]]->shape;
  t->shape = (Shape){.rank = ls->rank - 1};
  for (int i = 0; i < ls->rank - 1; i++) t->shape.d[i] = ls->d[i];
  t->dtype = DT_F32;
  t->key = ce;
  t->stage = op->stage, t->phase = op->phase, t->recompute = op->recompute;
  t->fwd_of = op->fwd_of, t->seg = op->seg;
  return t->id;
}

Program *fuse_program(Arena *a, Graph *g, const int *ops, int nops, KernelSet *ks) {
  int *rows_of = malloc(sizeof(int) * (size_t)(nops ? nops : 1));
  if (!rows_of) die("out of memory");
  for (int i = 0; i < nops; i++) rows_of[i] = g->ops[ops[i]]->kind == OP_CROSS_ENTROPY ? ce_rows_of(g, ops[i]) : -1;
  Fuse f = {.a = a, .g = g, .ks = ks};
  size_t n = (size_t)g->nops;
  f.p = arena_alloc(a, sizeof(Program));
  f.pos = arena_alloc(a, sizeof(int) * n);
  f.grp = arena_alloc(a, sizeof(int) * n);
  f.gemm_acc = arena_alloc(a, sizeof(int) * n);
  f.ce_rows = arena_alloc(a, sizeof(int) * n);
  f.mat = arena_alloc(a, n);
  f.folded_t = arena_alloc(a, n);
  f.done = arena_alloc(a, n);
  f.view = arena_alloc(a, n);
  for (int i = 0; i < g->nops; i++) f.pos[i] = f.grp[i] = f.gemm_acc[i] = f.ce_rows[i] = -1;
  for (int i = 0; i < nops; i++) f.pos[ops[i]] = i;
  for (int i = 0; i < nops; i++)
    if (rows_of[i] >= 0) f.ce_rows[ops[i]] = rows_of[i], f.pos[rows_of[i]] = i; /* lowered just before its loss */
  free(rows_of);
  for (int i = 0; i < g->nops; i++) f.mat[i] = f.pos[i] < 0 || fuse_cat(g->ops[i]->kind) == CAT_LEAF;
  build_users(&f);
  plan_folds(&f, ops, nops);
  for (int i = 0; i < nops; i++) lower_one(&f, ops[i]);
  close_group(&f, &f.cur);
  /* constants read by other passes (or by nobody) get a buffer */
  for (int i = 0; i < nops; i++) {
    int v = ops[i];
    if (fuse_cat(g->ops[v]->kind) != CAT_CONST || f.mat[v]) continue;
    bool outside = nusers(&f, v) == 0;
    for (int u = f.ustart[v]; u < f.ustart[v + 1]; u++) outside |= f.pos[f.users[u]] < 0;
    if (outside) materialize(&f, v);
  }
  return f.p;
}

/* ---- the pass: every stage's programs ------------------------------------------------------------------ */

/* The kernels compute in f32, i32 and bool; they load and store bf16 values that are
 * bf16 already (precision.c's roundings, stored in 2 bytes by prec_narrow). A program's own
 * bf16 and f16 ops are f32 ops by now (prec_lower_half): one left means a pass skipped
 * that, and gets a located diagnostic instead of an abort. */
static bool check_kernel_dtypes(Diag *d, const Graph *g) {
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->dtype != DT_BF16 && op->dtype != DT_F16) continue;
    if (op->dtype == DT_BF16 && prec_exact_bf16(g, i)) continue;
    diag_error(d, op->loc, "%s tensors cannot be compiled to kernels yet (only f32, i32 and bool); cast to f32",
               dtype_name(op->dtype));
    return false;
  }
  return true;
}

Fused *fuse_partition(Diag *d, Arena *a, Partition *p) {
  if (!check_kernel_dtypes(d, p->g)) return NULL;
  Fused *fu = arena_alloc(a, sizeof *fu);
  fu->nstages = p->nstages;
  fu->ks = kset_new(a);
  fu->progs = arena_alloc(a, sizeof(Program *[PASS__COUNT]) * (size_t)p->nstages);
  for (int s = 0; s < p->nstages; s++)
    for (int k = 0; k < PASS__COUNT; k++)
      fu->progs[s][k] = fuse_program(a, p->g, p->st[s].pass[k].v, p->st[s].pass[k].n, fu->ks);
  return fu;
}

void fuse_dump(FILE *out, const Fused *fu) {
  kir_dump(out, fu->ks, NULL);
  for (int s = 0; s < fu->nstages; s++)
    for (int k = 0; k < PASS__COUNT; k++) {
      if (!fu->progs[s][k]->nsteps) continue;
      fprintf(out, "\nprogram stage %d %s:\n", s, part_pass_name(k));
      kir_dump_program(out, fu->ks, fu->progs[s][k]);
    }
}

int *step_values(Arena *a, const Graph *g, const Step *st, int *n) {
  int *v;
  switch (st->kind) {
  case STEP_KERNEL: case STEP_SDPA: case STEP_SDPA_BWD: case STEP_CE: case STEP_EMB_GRAD:
    *n = st->nargs;
    return st->args;
  case STEP_GEMM:
    v = arena_alloc(a, sizeof(int) * 3);
    v[0] = st->a, v[1] = st->b, v[2] = st->c;
    *n = 3;
    return v;
  case STEP_ALIAS: case STEP_ACCUM:
    v = arena_alloc(a, sizeof(int) * 2);
    v[0] = st->a, v[1] = st->b;
    *n = 2;
    return v;
  case STEP_COMM: /* out, in */
    v = arena_alloc(a, sizeof(int) * 2);
    v[0] = st->op;
    v[1] = g->ops[st->op]->in[0];
    *n = 2;
    return v;
  }
  *n = 0;
  return NULL;
}
