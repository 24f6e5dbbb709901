/*
 * shard.c — tensor parallelism: propagate @shard layouts through the forward graph
 * and insert the collectives (Megatron's column- and row-parallel linear fall out).
 *
 * Runs on the forward graph when tp > 1, before autodiff, and rebuilds it as the
 * program of ONE tp rank (SPMD): every value gets its local shape (a dimension split
 * over tp holds 1/tp of it). A value's layout is replicated, split on one dimension
 * (in g groups: @shard(dim, groups = g)), or a partial sum (each tp rank holds one
 * term; the value is their sum). Rules, per op:
 *  - matmul of a replicated input with a weight split on its output columns
 *    (column-parallel; a batched weight, [E, K, N] split on N, as well): the input goes
 *    through TP_ENTER (identity forward, all-reduce of its gradient), the output is split
 *    on its last dimension;
 *  - matmul of an input split on its contracted dimension with a weight split on its
 *    rows (row-parallel): a partial sum; a replicated input (or a partial sum) is first
 *    cut to this rank's part of that dimension (TP_SLICE, free; REDUCE_SCATTER), as in
 *    Megatron's RowParallelLinear with input_is_parallel = False;
 *  - a batched matmul with an operand split on a batch dimension stays split there
 *    (expert parallelism); the other operand is split alike, cut (TP_SLICE) or, when
 *    broadcast along that dimension, entered (TP_ENTER: its gradient is a partial sum);
 *  - elementwise ops keep a split when their inputs agree (a replicated input that is
 *    not broadcast along the split dimension is cut with TP_SLICE, free; one broadcast
 *    along it goes through TP_ENTER when it is made of a param); ops linear
 *    in a partial sum keep it partial (neg, partial +- partial, partial * or /
 *    replicated; the replicated factor goes through TP_ENTER, as its gradient is then
 *    a partial sum);
 *  - sum and mean over the split dimension (or all of them) give a partial sum; sums,
 *    means, reshapes, transposes and slices of a partial sum stay partial;
 *  - reductions and softmax over another dimension, slices on whole groups of a
 *    grouped split (a fused q|k|v), reshapes that keep the split dimension a block,
 *    transposes, expands, and concats along another dimension (inputs cut alike) keep
 *    the split. The front end's repeat, stack and lowered sdpa are made of these ops, so
 *    a split survives them (sdpa's head axis when H and Hkv both divide by tp); the
 *    fused SDPA keeps the same split itself (shard_sdpa);
 *  - v2 (issue 13): sin, cos, floor, silu and % are elementwise; argmax, cumsum and topk
 *    over another dimension and one_hot keep a split; gather keeps a split of another
 *    axis when x and idx are split alike (or idx alone along the gather axis); im2col
 *    keeps a split of images or channels, and a matmul of a weight split on its rows with
 *    a whole operand is split on its rows, so conv2d with @shard(0) on its weight
 *    (output channels) is column-parallel and @shard(1) (input channels) row-parallel; a
 *    run-time CHECK checks each rank's part.
 * Where an op needs another layout than its input has, a collective is inserted:
 * partial -> replicated ALLREDUCE, partial -> split REDUCE_SCATTER, replicated ->
 * split TP_SLICE (no communication). split -> replicated (ALLGATHER) would re-gather
 * the whole value on every tp rank: that is a compile error naming the op, both
 * layouts and where the split came from, unless --allow-gather asks for it; one
 * error per place (a loop or a def running the line again adds "and N more times"),
 * at the user's call when the op is inside a stdlib def.
 * Invariants: no value leaves the pass as a partial sum; the loss is replicated;
 * Op.layout describes each value's layout (TP_SLICE, REDUCE_SCATTER: the split they
 * make; ALLGATHER: its input's).
 */
#include "mplc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A refused re-gather, reported once per place when the pass ends. */
typedef struct Refusal {
  Loc at;             /* where it is reported: the reader's place, or its user's call */
  const Op *reader;   /* the first reader refused here (an op of the old graph) */
  const Op *last;     /* the last one counted */
  int times;          /* distinct readers refused here: a loop or a def runs the line again */
  const char *msg;
  const Op *origin;   /* the @shard param of the split, or NULL */
  const char *other;  /* the first reader's other refused input: its layout, or NULL */
  const Op *other_origin;
  const Op *moved;    /* a reshape on the split's way that moved it past a part of size 1, or NULL */
} Refusal;

typedef struct Shard {
  Diag *d;
  Graph *g;
  int tp;
  bool allow_gather;
  int *map;     /* old id -> new id */
  int *gather;  /* new id -> its ALLGATHER, or -1 */
  int *reduced; /* new id (a partial sum) -> its ALLREDUCE, or -1 */
  int *entered; /* new id (replicated) -> its TP_ENTER made by enter(), or -1 */
  bool *dep;    /* new id -> made from a param (may carry a gradient) */
  bool *moved;  /* new id -> a reshape that kept its input's split by moving it past a part of
                   size 1 where a head count would be (kv_heads = 1 at tp = 2) */
  int cap;
  Refusal *refused;
  int nrefused, caprefused;
  const char *hint; /* why the op being sharded cannot keep its input's split (NULL: nothing to add) */
} Shard;

static const Layout REPL = {.split_dim = -1, .groups = 1};
static const Layout PARTIAL = {.split_dim = -1, .partial = true, .groups = 1};

static bool is_split(const Op *op) { return op->layout.split_dim >= 0; }
static bool is_partial(const Op *op) { return op->layout.partial; }

/* The tables by new op id (gather, reduced, entered, dep) hold id: grown as ops are added
 * (they were sized once, and a concat of 26 inputs at tp = 2 outgrew them). */
static void note_id(Shard *s, int id) {
  if (id < s->cap) return;
  int ncap = s->cap;
  while (ncap <= id) ncap *= 2;
  s->gather = realloc(s->gather, sizeof(int) * (size_t)ncap);
  s->reduced = realloc(s->reduced, sizeof(int) * (size_t)ncap);
  s->entered = realloc(s->entered, sizeof(int) * (size_t)ncap);
  s->dep = realloc(s->dep, sizeof(bool) * (size_t)ncap);
  s->moved = realloc(s->moved, sizeof(bool) * (size_t)ncap);
  if (!s->gather || !s->reduced || !s->entered || !s->dep || !s->moved) die("out of memory");
  for (int k = s->cap; k < ncap; k++) s->gather[k] = s->reduced[k] = s->entered[k] = -1, s->dep[k] = s->moved[k] = false;
  s->cap = ncap;
}

/* A new op copying the attributes of src, with these inputs. */
static Op *clone_with(Shard *s, const Op *src, int nin, const int *in) {
  Op *op = graph_add(s->g, src->kind, nin, in, src->loc);
  note_id(s, op->id);
  int id = op->id;
  int *keep = op->in;
  *op = *src;
  op->id = id;
  op->in = keep;
  op->nin = nin;
  op->layout = REPL;
  s->dep[op->id] = src->kind == OP_PARAM;
  for (int j = 0; j < nin; j++) s->dep[op->id] |= s->dep[in[j]];
  return op;
}

/* A new replicated op on inputs in[0..nin) inheriting placement from `like`: the
 * stage of its first input if it has one, else like's; like's seg and recompute.
 * Its dtype is its first input's (like's without inputs); the caller sets the shape. */
static Op *new_op(Shard *s, OpKind k, int nin, const int *in, const Op *like) {
  Op *op = graph_add(s->g, k, nin, in, like->loc);
  note_id(s, op->id);
  const Op *first = nin ? s->g->ops[in[0]] : like;
  op->dtype = first->dtype;
  op->stage = nin && first->stage >= 0 ? first->stage : like->stage;
  op->stage_loc = like->stage_loc;
  op->seg = like->seg;
  op->recompute = like->recompute;
  op->layout = REPL;
  s->dep[op->id] = false;
  for (int j = 0; j < nin; j++) s->dep[op->id] |= s->dep[in[j]];
  return op;
}

static Shape global_shape(const Shard *s, const Op *op) {
  Shape sh = op->shape;
  if (is_split(op)) sh.d[op->layout.split_dim] *= s->tp;
  return sh;
}

/* "split on dimension 2 of [4, 16, 64] over tp = 2", for the re-gather error. */
static const char *layout_desc(const Shard *s, const Op *op, char *buf, size_t n) {
  char sh[160];
  Shape g = global_shape(s, op);
  if (is_partial(op)) snprintf(buf, n, "a partial sum over tp = %d", s->tp);
  else if (!is_split(op)) snprintf(buf, n, "replicated");
  else if (op->layout.groups > 1)
    snprintf(buf, n, "split on dimension %d of %s in %d groups over tp = %d", op->layout.split_dim,
             shape_str(&g, sh, sizeof sh), op->layout.groups, s->tp);
  else snprintf(buf, n, "split on dimension %d of %s over tp = %d", op->layout.split_dim, shape_str(&g, sh, sizeof sh), s->tp);
  return buf;
}

/* The @shard param a split value comes from (following split inputs back), or NULL; and in
 * *moved (unless NULL) the nearest reshape on the way if s->moved marks it, else NULL (a
 * later reshape may have moved the split back: pass 50's hint that did not apply). */
static const Op *split_walk(const Shard *s, const Op *op, const Op **moved) {
  if (moved) *moved = NULL;
  for (int guard = 0; op && guard < s->g->nops; guard++) {
    if (op->kind == OP_PARAM) return op;
    if (moved && !*moved && op->kind == OP_RESHAPE) { /* the nearest reshape, if it moved the split */
      if (s->moved[op->id]) *moved = op;
      moved = NULL;
    }
    /* an input split by a param's own split first: a cut or reduce-scatter made here took
       its split from the op's other input (a partial sum times a split gain: the gain's) */
    const Op *next = NULL;
    for (int j = 0; j < op->nin && !next; j++) {
      const Op *x = s->g->ops[op->in[j]];
      if (is_split(x) && x->kind != OP_TP_SLICE && x->kind != OP_REDUCE_SCATTER) next = x;
    }
    for (int j = 0; j < op->nin && !next; j++)
      if (is_split(s->g->ops[op->in[j]]) || is_partial(s->g->ops[op->in[j]])) next = s->g->ops[op->in[j]];
    op = next;
  }
  return NULL;
}
static const Op *split_origin(const Shard *s, const Op *op) { return split_walk(s, op, NULL); }

/* The refusal already noted for reader's place (its own and where it is reported), or NULL. */
static Refusal *find_refusal(Shard *s, const Op *reader) {
  for (int i = 0; i < s->nrefused; i++) {
    Refusal *r = &s->refused[i];
    if (loc_same(r->at, op_user_loc(reader)) && loc_same(r->reader->loc, reader->loc)) return r;
  }
  return NULL;
}

/* A place refused before: count another reader there of the kind the message names (not
 * an op lowered with it: topk's gather), or note a second input of the first. */
static void refuse_again(Shard *s, Refusal *r, const Op *v, const Op *reader) {
  char have[256];
  if (r->last != reader) {
    if (reader->kind == r->reader->kind) r->times++;
    r->last = reader;
  } else if (r->reader == reader && !r->other) {
    r->other = arena_strdup(s->g->arena, layout_desc(s, v, have, sizeof have));
    r->other_origin = split_origin(s, v);
  }
}

static Refusal *new_refusal(Shard *s) {
  if (s->nrefused == s->caprefused) {
    s->caprefused = s->caprefused ? 2 * s->caprefused : 8;
    s->refused = realloc(s->refused, sizeof *s->refused * (size_t)s->caprefused);
    if (!s->refused) die("out of memory");
  }
  return &s->refused[s->nrefused++];
}

/* split -> replicated would gather the whole value on every rank: an error unless
 * asked, noted here and reported once per place by report_refusals. */
static void check_gather(Shard *s, const Op *v, const Op *reader) {
  if (s->allow_gather) return;
  Refusal *r = find_refusal(s, reader);
  if (r) {
    refuse_again(s, r, v, reader);
    return;
  }
  char have[256], why[160] = "";
  const Op *moved;
  const Op *origin = split_walk(s, v, &moved);
  if (moved) /* (pass 103: the rule was only in the third note, after rope's split and its place) */
    snprintf(why, sizeof why, ", where a reshape moved it past a dimension of size 1 (if that dimension counts heads, "
             "a head count must divide by tp = %d)", s->tp);
  const char *msg = arena_printf(s->g->arena,
                                 "%s needs %s replicated, but %s %s%s%s: that would all-gather the whole value "
                                 "on every tp rank (pass --allow-gather to accept it, or shard so that this op keeps the split)",
                                 op_name(reader->kind), reader->nin > 1 ? "its inputs" : "its input",
                                 reader->nin > 1 ? "one of them is" : "the input is", layout_desc(s, v, have, sizeof have),
                                 why, s->hint ? s->hint : "");
  *new_refusal(s) = (Refusal){op_user_loc(reader), reader, reader, 1, msg, origin, NULL, NULL, moved};
}

/* One error per place refused, with how many more ops there were refused the same: a
 * refusal of the same text at the same user place (q, k and v's reshapes in one stdlib
 * call, each on its own line of it) joins the first (pass 71: three identical errors). */
static void report_refusals(Shard *s) {
  for (int i = 0; i < s->nrefused; i++)
    for (int j = 0; j < i; j++) {
      Refusal *a = &s->refused[j], *b = &s->refused[i];
      if (a->times > 0 && b->times > 0 && loc_same(a->at, b->at) && !strcmp(a->msg, b->msg)) {
        a->times += b->times;
        b->times = 0;
      }
    }
  for (int i = 0; i < s->nrefused; i++) {
    const Refusal *r = &s->refused[i];
    if (r->times == 0) continue; /* joined an earlier one */
    if (r->times > 1)
      diag_error(s->d, r->at, "%s (and %d more time%s)", r->msg, r->times - 1, r->times == 2 ? "" : "s");
    else diag_error(s->d, r->at, "%s", r->msg);
    if (r->reader->site) note_inside(s->d, r->reader->loc, r->reader->site->inside);
    if (r->origin) diag_note(s->d, r->origin->loc, "the split comes from @shard on '%s'", r->origin->name);
    if (r->moved) { /* (kv_heads = 1 at tp = 2: the error was at rope's split of the head size) */
      char have[256];
      diag_note(s->d, r->moved->loc, "this reshape moved the split past a dimension of size 1 (its result is %s)",
                layout_desc(s, r->moved, have, sizeof have));
    }
    if (r->other && r->other_origin)
      diag_note(s->d, r->other_origin->loc, "the other input is %s, from @shard on '%s'", r->other, r->other_origin->name);
  }
}

/* The replicated (whole) value of new op v, for a reader like `reader` (whose stage a
 * collective on a stage-less value, a param, takes: its gradient must land there). */
static int make_repl(Shard *s, int v, const Op *reader) {
  Op *op = s->g->ops[v];
  int stage = op->stage >= 0 ? op->stage : reader->stage;
  if (is_partial(op)) {
    if (s->reduced[v] >= 0 && s->g->ops[s->reduced[v]]->stage == stage) return s->reduced[v];
    Op *ar = new_op(s, OP_ALLREDUCE, 1, &v, reader);
    ar->shape = op->shape;
    s->reduced[v] = ar->id;
    return ar->id;
  }
  if (!is_split(op)) return v;
  check_gather(s, op, reader); /* each reader refused, not only the first (pass 87) */
  if (s->gather[v] >= 0 && s->g->ops[s->gather[v]]->stage == stage) return s->gather[v];
  Op *ga = new_op(s, OP_ALLGATHER, 1, &v, reader);
  ga->shape = global_shape(s, op);
  ga->axis = op->layout.split_dim;
  ga->key = op->layout.groups;
  s->gather[v] = ga->id;
  return ga->id;
}

/* The local shard, split on dim with groups, of new op v (replicated, a partial sum, or
 * split another way), for `reader`. */
static int make_split(Shard *s, int v, int dim, int groups, const Op *reader) {
  Op *op = s->g->ops[v];
  if (is_split(op) && op->layout.split_dim == dim && op->layout.groups == groups) return v;
  OpKind k = OP_TP_SLICE;
  if (is_partial(op) && s->reduced[v] < 0) k = OP_REDUCE_SCATTER; /* one collective, not all-reduce + slice */
  else v = make_repl(s, v, reader);
  Op *sl = new_op(s, k, 1, &v, reader);
  sl->shape = s->g->ops[v]->shape;
  sl->shape.d[dim] /= s->tp;
  sl->axis = dim;
  sl->key = groups;
  sl->layout = (Layout){.split_dim = dim, .groups = groups};
  return sl->id;
}

/* A replicated value v read by an op whose result is split along a dimension v is
 * broadcast on: each rank's gradient of v is a partial sum, so v goes through
 * TP_ENTER (identity; its gradient is all-reduced), once per value and stage. A value
 * made of no param carries no gradient and needs none. */
static int enter(Shard *s, int v, const Op *reader) {
  Op *op = s->g->ops[v];
  int stage = op->stage >= 0 ? op->stage : reader->stage;
  if (!s->dep[v] || (op->dtype != DT_F32 && op->dtype != DT_BF16 && op->dtype != DT_F16)) return v;
  if (s->entered[v] >= 0 && s->g->ops[s->entered[v]]->stage == stage) return s->entered[v];
  Op *e = new_op(s, OP_TP_ENTER, 1, &v, reader);
  e->shape = op->shape;
  s->entered[v] = e->id;
  return e->id;
}

static bool splittable(const Shard *s, int64_t n, int groups) { return n % ((int64_t)s->tp * groups) == 0; }

/* Finishes op with the layout given: the local shape from the global one. */
static int finish(Shard *s, Op *op, const Op *src, Layout l) {
  op->shape = src->shape;
  op->layout = l;
  if (l.split_dim >= 0) op->shape.d[l.split_dim] /= s->tp;
  return op->id;
}

/* Every input replicated (partial sums all-reduced, splits gathered), a replicated result. */
static int fallback(Shard *s, const Op *src, const int *in) {
  int *r = malloc(sizeof(int) * (size_t)(src->nin + 1));
  for (int j = 0; j < src->nin; j++) r[j] = make_repl(s, in[j], src);
  Op *op = clone_with(s, src, src->nin, r);
  free(r);
  return finish(s, op, src, REPL);
}

/* ---- the rules ------------------------------------------------------------------------- */

/* Row-parallel on a whole input (Megatron's RowParallelLinear with input_is_parallel =
 * False): a replicated input, or a partial sum, times a weight split on its rows is
 * cut to this rank's part of the contracted dimension (TP_SLICE, free; a partial sum
 * is REDUCE_SCATTERed) and gives a partial sum. -1 if the operands are not like that. */
static int row_whole_input(Shard *s, const Op *src, const int *in) {
  const Op *a = s->g->ops[in[0]], *b = s->g->ops[in[1]];
  int ra = a->shape.rank, rb = b->shape.rank;
  int a_k = src->ta ? ra - 2 : ra - 1, b_k = src->tb ? rb - 1 : rb - 2;
  if (is_split(a) || !is_split(b) || b->layout.split_dim != b_k || b->layout.groups != 1) return -1;
  int r[2] = {make_split(s, in[0], a_k, 1, src), in[1]};
  return finish(s, clone_with(s, src, 2, r), src, PARTIAL);
}

/* A product with an operand split on a batch dimension keeps that split (expert
 * parallelism: a [experts, d, h] weight with @shard(0)). The other operand is split
 * alike, or replicated: cut to this rank's part when it has that dimension whole
 * (TP_SLICE, free), else broadcast against it (TP_ENTER: its gradient is a partial
 * sum). -1 if the operands are not like that. */
static int batch_split(Shard *s, const Op *src, const int *in) {
  int rout = src->shape.rank, o = -1, r[2];
  for (int j = 0; j < 2; j++) {
    const Op *x = s->g->ops[in[j]];
    if (!is_split(x)) continue;
    int oj = x->layout.split_dim + (rout - x->shape.rank);
    if (x->layout.groups != 1 || x->layout.split_dim >= x->shape.rank - 2 || (o >= 0 && o != oj)) return -1;
    o = oj;
  }
  if (o < 0) return -1;
  for (int j = 0; j < 2; j++) {
    const Op *x = s->g->ops[in[j]];
    int dim = o - (rout - x->shape.rank);
    if (is_split(x)) r[j] = in[j];
    else if (dim >= 0 && x->shape.d[dim] != 1) r[j] = make_split(s, in[j], dim, 1, src);
    else r[j] = enter(s, in[j], src);
  }
  return finish(s, clone_with(s, src, 2, r), src, (Layout){.split_dim = o, .groups = 1});
}

static int shard_matmul(Shard *s, const Op *src, const int *in0) {
  int row = row_whole_input(s, src, in0);
  if (row >= 0) return row;
  int in[2];
  for (int j = 0; j < 2; j++) /* a partial sum is reduced first; splits stay for the rules below */
    in[j] = is_partial(s->g->ops[in0[j]]) ? make_repl(s, in0[j], src) : in0[j];
  Op *a = s->g->ops[in[0]], *b = s->g->ops[in[1]];
  int ra = a->shape.rank, rb = b->shape.rank;
  int a_k = src->ta ? ra - 2 : ra - 1, b_k = src->tb ? rb - 1 : rb - 2, b_n = src->tb ? rb - 2 : rb - 1;
  int rout = src->shape.rank;
  if (!is_split(a) && is_split(b) && rb >= 2 && b->layout.split_dim == b_n) { /* column-parallel (a batched b too) */
    Op *enter = new_op(s, OP_TP_ENTER, 1, &in[0], src);
    enter->shape = a->shape;
    int r[2] = {enter->id, b->id};
    Op *op = clone_with(s, src, 2, r);
    return finish(s, op, src, (Layout){.split_dim = rout - 1, .groups = b->layout.groups});
  }
  if (is_split(a) && is_split(b) && a->layout.split_dim == a_k && b->layout.split_dim == b_k &&
      a->layout.groups == 1 && b->layout.groups == 1) /* row-parallel: partial sums */
    return finish(s, clone_with(s, src, 2, in), src, PARTIAL);
  int batch = batch_split(s, src, in);
  return batch >= 0 ? batch : fallback(s, src, in);
}

/* Is src linear in its partial-sum inputs, with every other input replicated? */
static bool keeps_partial(const Shard *s, const Op *src, const int *in) {
  int npart = 0, nrepl = 0;
  for (int j = 0; j < src->nin; j++) {
    const Op *x = s->g->ops[in[j]];
    if (is_split(x)) return false;
    is_partial(x) ? npart++ : nrepl++;
  }
  switch (src->kind) {
  case OP_NEG: return npart == 1;
  case OP_ADD: case OP_SUB: return nrepl == 0;
  case OP_MUL: return npart == 1;
  case OP_DIV: return npart == 1 && is_partial(s->g->ops[in[0]]);
  default: return false;
  }
}

/* Elementwise: keep the first input's split if every input can follow it. */
static int shard_elementwise(Shard *s, const Op *src, const int *in) {
  int R = src->shape.rank, target = -1, groups = 1;
  for (int j = 0; j < src->nin && target < 0; j++) {
    const Op *x = s->g->ops[in[j]];
    if (is_split(x)) target = x->layout.split_dim + (R - x->shape.rank), groups = x->layout.groups;
  }
  if (target < 0 && keeps_partial(s, src, in)) {
    /* a replicated factor of a partial sum gets a partial gradient: TP_ENTER all-reduces it */
    int r[3];
    for (int j = 0; j < src->nin; j++) {
      const Op *x = s->g->ops[in[j]];
      r[j] = in[j];
      if (!is_partial(x) && op_info[x->kind].cls != OPC_C && (src->kind == OP_MUL || src->kind == OP_DIV)) {
        Op *enter = new_op(s, OP_TP_ENTER, 1, &in[j], src);
        enter->shape = x->shape;
        r[j] = enter->id;
      }
    }
    return finish(s, clone_with(s, src, src->nin, r), src, PARTIAL);
  }
  if (target < 0) return fallback(s, src, in); /* dropout too: its masks are the whole value's */
  int *r = malloc(sizeof(int) * (size_t)src->nin);
  bool ok = true;
  for (int j = 0; j < src->nin && ok; j++) {
    const Op *x = s->g->ops[in[j]];
    int dim = target - (R - x->shape.rank);
    r[j] = in[j];
    if (is_split(x)) ok = x->layout.split_dim == dim && x->layout.groups == groups;
    else if (dim >= 0 && x->shape.d[dim] != 1) r[j] = make_split(s, in[j], dim, groups, src);
    else r[j] = enter(s, make_repl(s, in[j], src), src); /* broadcast along the split: whole */
  }
  int id;
  if (ok) id = finish(s, clone_with(s, src, src->nin, r), src, (Layout){.split_dim = target, .groups = groups});
  else id = fallback(s, src, in);
  free(r);
  return id;
}

/* A scalar constant, for scaling a partial mean. */
static int scalar(Shard *s, double value, const Op *like) {
  Op *c = new_op(s, OP_FULL, 0, NULL, like);
  c->shape.rank = 0;
  c->value = value;
  c->stage = -1; /* a constant, placed where it is read */
  return c->id;
}

static int shard_reduce(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]];
  bool linear = src->kind == OP_SUM || src->kind == OP_MEAN;
  if (is_partial(x) && linear) return finish(s, clone_with(s, src, 1, in), src, PARTIAL);
  if (!is_split(x)) return fallback(s, src, in);
  int k = x->layout.split_dim, axis = src->axis;
  if (axis == AXIS_ALL || axis == k) {
    if (!linear) return fallback(s, src, in);
    /* each rank reduces its part: a partial sum (a mean of parts, scaled by 1/tp) */
    int id = finish(s, clone_with(s, src, 1, in), src, PARTIAL);
    if (src->kind == OP_SUM) return id;
    int r[2] = {id, scalar(s, 1.0 / s->tp, src)};
    Op *mul = new_op(s, OP_MUL, 2, r, src);
    mul->shape = src->shape;
    mul->layout = PARTIAL;
    return mul->id;
  }
  bool keeps_rank = src->kind == OP_SOFTMAX || src->kind == OP_LOG_SOFTMAX || src->keepdims;
  int out = keeps_rank || k < axis ? k : k - 1;
  return finish(s, clone_with(s, src, 1, in), src, (Layout){.split_dim = out, .groups = x->layout.groups});
}

static int shard_slice(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]];
  int k = x->layout.split_dim;
  if (is_partial(x)) return finish(s, clone_with(s, src, 1, in), src, PARTIAL);
  if (!is_split(x)) return fallback(s, src, in);
  if (src->axis != k)
    return finish(s, clone_with(s, src, 1, in), src, x->layout);
  int64_t D = x->shape.d[k] * s->tp, G = D / x->layout.groups;
  if (src->begin % G || src->end % G) return fallback(s, src, in);
  Op *op = clone_with(s, src, 1, in);
  int id = finish(s, op, src, (Layout){.split_dim = k, .groups = (int)((src->end - src->begin) / G)});
  op->begin = src->begin / s->tp;
  op->end = src->end / s->tp;
  return id;
}

/* A reshape keeps the split when the split dimension stays one block in the output. */
static int shard_reshape(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]];
  if (is_partial(x)) return finish(s, clone_with(s, src, 1, in), src, PARTIAL);
  if (!is_split(x) || x->layout.groups != 1) return fallback(s, src, in);
  int k = x->layout.split_dim;
  int64_t prefix = 1;
  for (int i = 0; i < k; i++) prefix *= x->shape.d[i];
  int64_t p = 1;
  for (int j = 0; j < src->shape.rank; j++) {
    if (p == prefix && splittable(s, src->shape.d[j], 1)) {
      bool moved = s->hint != NULL; /* a size-1 part passed on the way: the split is kept after all */
      s->hint = NULL;
      int id = finish(s, clone_with(s, src, 1, in), src, (Layout){.split_dim = j, .groups = 1});
      s->moved[id] = moved;
      return id;
    }
    if (p == prefix && src->shape.d[j] % s->tp)
      s->hint = arena_printf(s->g->arena, ", and the reshape makes that dimension's leading part %lld, which does not divide "
                             "by tp = %d (a head count must divide by tp)", (long long)src->shape.d[j], s->tp);
    p *= src->shape.d[j];
    if (p > prefix) break;
  }
  int id = fallback(s, src, in);
  s->hint = NULL;
  return id;
}

static int shard_transpose(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]];
  if (is_partial(x)) return finish(s, clone_with(s, src, 1, in), src, PARTIAL);
  if (!is_split(x)) return fallback(s, src, in);
  Layout l = x->layout;
  if (l.split_dim == src->axis) l.split_dim = src->axis2;
  else if (l.split_dim == src->axis2) l.split_dim = src->axis;
  return finish(s, clone_with(s, src, 1, in), src, l);
}

/* expand (and repeat, which is made of it): a split axis keeps its size, so it stays
 * split (shifted by the new leading axes); a partial sum broadcast is a partial sum. */
static int shard_expand(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]];
  if (is_partial(x)) return finish(s, clone_with(s, src, 1, in), src, PARTIAL);
  if (!is_split(x)) return fallback(s, src, in);
  Layout l = x->layout;
  l.split_dim += src->shape.rank - x->shape.rank;
  return finish(s, clone_with(s, src, 1, in), src, l);
}

/* concat (and stack) along another axis than the split one keeps the split: every
 * input is split alike (a replicated one is cut, TP_SLICE; a partial sum is
 * reduce-scattered). Partial sums only: a partial sum. */
static int shard_concat(Shard *s, const Op *src, const int *in) {
  int target = -1, groups = 1, npart = 0;
  for (int j = 0; j < src->nin; j++) {
    const Op *x = s->g->ops[in[j]];
    npart += is_partial(x);
    if (is_split(x) && target < 0) target = x->layout.split_dim, groups = x->layout.groups;
  }
  if (target < 0 && npart == src->nin) return finish(s, clone_with(s, src, src->nin, in), src, PARTIAL);
  if (target < 0 || target == src->axis) return fallback(s, src, in);
  int *r = malloc(sizeof(int) * (size_t)src->nin);
  bool ok = true;
  for (int j = 0; j < src->nin && ok; j++) {
    const Op *x = s->g->ops[in[j]];
    r[j] = in[j];
    if (is_split(x)) ok = x->layout.split_dim == target && x->layout.groups == groups;
    else r[j] = make_split(s, in[j], target, groups, src);
  }
  int id = ok ? finish(s, clone_with(s, src, src->nin, r), src, (Layout){.split_dim = target, .groups = groups})
              : fallback(s, src, in);
  free(r);
  return id;
}

/* ---- v2 ops with kernels of their own (issue 13, item 1) --------------------------------- */

/* ARGMAX, CUMSUM and TOPK along an axis keep a split of another axis (ARGMAX without
 * keepdims moves it down past the reduced one); ONE_HOT keeps any split (it adds a last
 * axis). Along the split axis they need the whole input. */
static int shard_along_axis(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]];
  if (!is_split(x) || (src->kind != OP_ONE_HOT && x->layout.split_dim == src->axis)) return fallback(s, src, in);
  Layout l = x->layout;
  if (src->kind == OP_ARGMAX && !src->keepdims && l.split_dim > src->axis) l.split_dim--;
  return finish(s, clone_with(s, src, 1, in), src, l);
}

/* GATHER(x, idx) along axis a: a split of another axis d stays when x and idx are split
 * alike on d (a whole one is cut to match, free) and have one size there; indices split
 * along a itself (x whole) give the output split along a (each rank gathers its part of the
 * positions, so x goes through TP_ENTER: its gradient is all-reduced). */
static int shard_gather(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]], *idx = s->g->ops[in[1]];
  if (is_partial(x) || (!is_split(x) && !is_split(idx))) return fallback(s, src, in);
  const Op *lead = is_split(x) ? x : idx;
  int d = lead->layout.split_dim, groups = lead->layout.groups;
  if (d == src->axis) { /* x whole: each rank's gradient of it covers its positions alone */
    if (is_split(x)) return fallback(s, src, in);
    int r[2] = {enter(s, in[0], src), in[1]};
    return finish(s, clone_with(s, src, 2, r), src, idx->layout);
  }
  Shape gx = global_shape(s, x), gi = global_shape(s, idx);
  if (gx.d[d] != gi.d[d]) return fallback(s, src, in);
  int r[2] = {make_split(s, in[0], d, groups, src), make_split(s, in[1], d, groups, src)};
  return finish(s, clone_with(s, src, 2, r), src, (Layout){.split_dim = d, .groups = groups});
}

/* IM2COL of x [N, C, H, W] split on N or C: the patches [N, C*kh*kw, Ho*Wo] split on the
 * same axis (C is the major part of the patch axis, so a block of channels is a block of
 * it); im2col is linear, so a partial sum stays one. */
static int shard_im2col(Shard *s, const Op *src, const int *in) {
  const Op *x = s->g->ops[in[0]];
  if (is_partial(x)) return finish(s, clone_with(s, src, 1, in), src, PARTIAL);
  if (!is_split(x) || x->layout.split_dim > 1) return fallback(s, src, in);
  return finish(s, clone_with(s, src, 1, in), src, x->layout);
}

/* A CHECK counts what this rank holds of its input, whatever its layout: every rank checks
 * its own part, and the runtime stops on any rank's count. */
static int shard_check(Shard *s, const Op *src, const int *in) {
  return finish(s, clone_with(s, src, 1, in), src, REPL);
}

/* A matmul whose left operand is split on its rows (conv2d's weight [O, C*kh*kw] split on
 * its output channels O) and whose right operand is whole: the output split on its rows,
 * the right operand through TP_ENTER (its gradient, a partial sum, is all-reduced): the
 * column-parallel linear seen from the other side. Else the rules of shard_matmul. */
static int shard_matmul_rows(Shard *s, const Op *src, const int *in) {
  const Op *a = s->g->ops[in[0]], *b = s->g->ops[in[1]];
  int ra = a->shape.rank, a_m = src->ta ? ra - 1 : ra - 2;
  if (ra < 2 || !is_split(a) || a->layout.split_dim != a_m || is_split(b) || is_partial(b))
    return shard_matmul(s, src, in);
  Op *enter = new_op(s, OP_TP_ENTER, 1, &in[1], src);
  enter->shape = b->shape;
  int r[2] = {in[0], enter->id};
  return finish(s, clone_with(s, src, 2, r), src, (Layout){.split_dim = src->shape.rank - 2, .groups = a->layout.groups});
}

/* SDPA (issue 14) keeps a split of the head axis (or of a leading axis) that q, k and v
 * share: each rank attends with its own heads, query head h on kv head h / (H / Hkv) holding
 * locally as long as H and Hkv both divide by tp (as the lowered form's views do), or when
 * there is one kv head, replicated (multi-query; entered). A whole k or v is cut to match (TP_SLICE,
 * free); anything else is computed whole. Its RESULT takes
 * its layout (the lse is [.., H, T]: the same leading and head axes). */
static int shard_sdpa(Shard *s, const Op *src, const int *in) {
  const Op *q = s->g->ops[in[0]];
  int r = q->shape.rank, dim = q->layout.split_dim;
  int c[3] = {in[0], in[1], in[2]};
  const Op *k = s->g->ops[in[1]], *v = s->g->ops[in[2]];
  /* a whole q against split k and v: cut q to the rank's heads (free), as a whole k or v is */
  if (!is_split(q) && !is_partial(q)) {
    const Op *kv = is_split(k) ? k : is_split(v) ? v : NULL;
    if (kv && kv->layout.groups == 1 && kv->layout.split_dim <= r - 3 && splittable(s, q->shape.d[kv->layout.split_dim], 1)) {
      dim = kv->layout.split_dim;
      c[0] = make_split(s, in[0], dim, 1, src);
      q = s->g->ops[c[0]];
    }
  }
  if (!is_split(q) || q->layout.groups != 1 || dim > r - 3) return fallback(s, src, in);
  /* multi-query (one kv head) on split query heads: every local head reads kv head 0, so
     a replicated k and v serve as they are, through TP_ENTER (each rank's dk and dv are
     its heads' share: all-reduced) */
  if (dim == r - 3 && k->shape.d[dim] == 1 && !is_split(k) && !is_split(v) && !is_partial(k) && !is_partial(v)) {
    c[1] = enter(s, in[1], src), c[2] = enter(s, in[2], src); /* their gradients: partial sums */
    return finish(s, clone_with(s, src, 3, c), src, (Layout){.split_dim = dim, .groups = 1});
  }
  for (int j = 1; j < 3; j++) {
    const Op *x = s->g->ops[in[j]];
    if (is_split(x) && (x->layout.split_dim != dim || x->layout.groups != 1)) return fallback(s, src, in);
    if (!is_split(x) && (is_partial(x) || !splittable(s, x->shape.d[dim], 1))) return fallback(s, src, in);
    c[j] = make_split(s, in[j], dim, 1, src);
  }
  return finish(s, clone_with(s, src, 3, c), src, (Layout){.split_dim = dim, .groups = 1});
}

static int shard_result(Shard *s, const Op *src, const int *in) {
  const Op *of = s->g->ops[in[0]];
  return finish(s, clone_with(s, src, 1, in), src, of->layout);
}

static int shard_param(Shard *s, const Op *src) {
  return finish(s, clone_with(s, src, 0, NULL), src, src->layout);
}

static int shard_op(Shard *s, const Op *src, const int *in) {
  switch (src->kind) {
  case OP_PARAM: return shard_param(s, src);
  case OP_MATMUL: return shard_matmul_rows(s, src, in);
  case OP_SUM: case OP_MEAN: case OP_AMAX: case OP_SOFTMAX: case OP_LOG_SOFTMAX: return shard_reduce(s, src, in);
  case OP_SLICE: return shard_slice(s, src, in);
  case OP_RESHAPE: return shard_reshape(s, src, in);
  case OP_TRANSPOSE: return shard_transpose(s, src, in);
  case OP_EXPAND: return shard_expand(s, src, in); /* issue 13: expand, repeat */
  case OP_CONCAT: return shard_concat(s, src, in); /* issue 13: concat, stack */
  /* v2 ops with kernels of their own (issue 13, item 1) */
  case OP_ARGMAX: case OP_CUMSUM: case OP_TOPK: case OP_ONE_HOT: return shard_along_axis(s, src, in);
  case OP_GATHER: return shard_gather(s, src, in);
  case OP_IM2COL: return shard_im2col(s, src, in);
  case OP_CHECK: return shard_check(s, src, in);
  case OP_SDPA: return shard_sdpa(s, src, in); /* issue 14 */
  case OP_RESULT: return shard_result(s, src, in);
  default:
    if (op_info[src->kind].cls == OPC_E || src->kind == OP_DROPOUT) return shard_elementwise(s, src, in);
    return fallback(s, src, in);
  }
}

Graph *shard_program(Diag *d, Graph *old, bool allow_gather) {
  int tp = old->mesh.tp;
  if (tp <= 1) return old;
  Shard s = {.d = d, .tp = tp, .allow_gather = allow_gather};
  s.g = graph_new(old->arena);
  Graph keep = *old;
  *s.g = keep;
  s.g->ops = NULL;
  s.g->nops = s.g->cap = 0;
  s.map = malloc(sizeof(int) * (size_t)old->nops);
  s.cap = 6 * old->nops + 16;
  s.gather = malloc(sizeof(int) * (size_t)s.cap);
  s.reduced = malloc(sizeof(int) * (size_t)s.cap);
  s.entered = malloc(sizeof(int) * (size_t)s.cap);
  s.dep = calloc((size_t)s.cap, sizeof(bool));
  s.moved = calloc((size_t)s.cap, sizeof(bool));
  if (!s.map || !s.gather || !s.reduced || !s.entered || !s.dep || !s.moved) die("out of memory");
  for (int i = 0; i < s.cap; i++) s.gather[i] = s.reduced[i] = s.entered[i] = -1;
  int *in = malloc(sizeof(int) * 64);
  int in_cap = 64;
  for (int i = 0; i < old->nops; i++) {
    const Op *src = old->ops[i];
    if (src->nin > in_cap) in_cap = src->nin, in = realloc(in, sizeof(int) * (size_t)in_cap);
    for (int j = 0; j < src->nin; j++) in[j] = s.map[src->in[j]];
    s.map[i] = shard_op(&s, src, in);
  }
  s.g->loss = old->loss >= 0 ? make_repl(&s, s.map[old->loss], old->ops[old->loss]) : -1;
  report_refusals(&s);
  free(s.refused);
  free(in);
  free(s.map);
  free(s.gather);
  free(s.reduced);
  free(s.entered);
  free(s.dep);
  free(s.moved);
  graph_verify(s.g);
  return s.g;
}
