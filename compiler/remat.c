/*
 * remat.c — selective recomputation (after precision.c, before part_join_backward and the
 * partition; mplc --no-remat turns it off): forward values that the backward reads and
 * that are cheap to make again from other held values are made again in the backward
 * instead of being held from the forward to the backward. torch.compile's partitioner does the same for
 * pointwise ops; it is why a compiled step holds less than an eager one.
 *
 * The values it drops from the stash, in a transformer block: a LayerNorm's normalised
 * input x̂ = (x − mean)·rstd and its output x̂·γ + β (held for the backward of γ and of the
 * next product; both remade from x − mean and rstd, which the LayerNorm's backward holds
 * anyway), the GELU's output (remade from its input, which GELU's gradient holds), and a
 * reshape or transpose of a held value (the attention's output in the layout the next
 * product reads). A GPT block holds 10 values of [B, T, d] instead of 19.
 *
 * Which ops may be recomputed (cheap): elementwise ops and shape ops (reshape, transpose,
 * slice, pad, concat, expand) of the same stage, not under @recompute (partition.c's);
 * never a product, a reduction, an attention, a gather, a random op (dropout), a
 * collective or a transfer. A held value v is dropped when it can be made
 * from the values still held, the leaves (params, inputs) and constants through at most
 * MAX_CHAIN cheap ops. The candidates are visited in graph order, so a chain's length is
 * final when it is measured (a value's chain reads only values of lower ids, decided
 * before it): no value's recomputation grows past MAX_CHAIN ops, and a long run of cheap
 * ops (a stack of tanh layers) keeps every (MAX_CHAIN + 1)-th value held. Dropping a value
 * never holds another: the stash only shrinks.
 *
 * The recomputed ops are clones (fwd_of: the forward op) placed in the backward pass that
 * reads them, right before their first reader there, one per pass (B and W; one in all
 * under a one-pass backward): they live from there to their last reader in that pass, and
 * fuse.c fuses them into the backward's kernels like any elementwise op. They compute what the forward computed, in the same
 * order on the same inputs, so the step's values are the same bits with or without it.
 *
 * Under a schedule whose backward is one pass (part_join_backward, which runs after this),
 * each run of weight-gradient ops is copied after the input-gradient op that follows it, so
 * a value remade for a weight gradient is remade next to the input gradient that reads the
 * same held value: GELU's output beside GELU's gradient, which fuse.c then puts in one
 * kernel (siblings) where the two share their tanh (the kernel IR's hash-consing). The
 * order of the weight-gradient ops among themselves is kept, so no sum changes order. For
 * the same reason the elementwise input-gradient ops close behind that read what a clone
 * reads (or read those) are pulled up beside the clone (pull_siblings): SiLU's gradient
 * beside the recomputed SiLU, both computing 1 + exp(-x), which their kernel does once.
 *
 * Invariants: the new graph keeps [forward][backward] and graph_verify's invariants; the
 * forward is copied unchanged (ids kept), the backward in its order with the clones
 * inserted; a reader on another stage, or in the forward, reads the forward op as before.
 */
#include "mplc.h"
#include "partition.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_CHAIN = 8 };
#define NOT_CHEAP 0x3fff /* chain length of a value that cannot be recomputed */

static bool is_backward(const Op *op) { return op->phase == PH_BWD_B || op->phase == PH_BWD_W; }

/* Always available in the backward without being held: leaves and stage-less constants
 * (partition.c makes a constant in each pass that reads it). */
static bool available(const Op *op) {
  return op->kind == OP_PARAM || op->kind == OP_INPUT || op_info[op->kind].cls == OPC_L || op->stage < 0;
}

/* May op be computed again in the backward from its inputs? */
static bool cheap(const Op *op) {
  return op->phase == PH_FWD && !op->recompute && op->stage >= 0 && op_cheap_to_remake(op);
}

typedef struct Remat {
  const Graph *old;
  Graph *g;
  int nfwd;
  bool *held;     /* old id: held for the backward (after the drops) */
  bool *redo;     /* old id: recomputed in the backward rather than held */
  int *clone[2];  /* old id -> its clone in bwd_b [0] / bwd_w [1], -1 for none yet */
  int *map;       /* old id -> new id (forward and backward ops) */
  bool joined;    /* the schedule makes the backward one pass (part_join_backward, after this) */
  bool *done;     /* old backward id: copied already (pulled up beside a clone) */
  int *touched;   /* old forward ids the clones made by the current copy read, [ntouched] */
  int ntouched;
} Remat;

/* The stash partition.c would hold: forward values (not leaves, constants, @recompute
 * ops) that a backward op of the same stage reads. */
static void find_held(Remat *r) {
  const Graph *g = r->old;
  for (int i = r->nfwd; i < g->nops; i++) {
    const Op *op = g->ops[i];
    for (int j = 0; j < op->nin; j++) {
      const Op *in = g->ops[op->in[j]];
      if (in->phase == PH_FWD && !available(in) && !in->recompute && in->stage == op->stage) r->held[in->id] = true;
    }
  }
}

/* Decides, in graph order, which held values are dropped: chain[i] is the number of cheap
 * ops that remake value i from held and available values (0: it is one of those). */
static int decide(Remat *r) {
  const Graph *g = r->old;
  int *chain = malloc(sizeof(int) * (size_t)(r->nfwd ? r->nfwd : 1));
  if (!chain) die("out of memory");
  int dropped = 0;
  for (int i = 0; i < r->nfwd; i++) {
    const Op *op = g->ops[i];
    if (available(op)) {
      chain[i] = 0;
      continue;
    }
    int len = NOT_CHEAP;
    if (cheap(op)) {
      int deepest = 0;
      for (int j = 0; j < op->nin && deepest < NOT_CHEAP; j++) {
        const Op *in = g->ops[op->in[j]];
        bool usable = available(in) || in->stage == op->stage;
        deepest = !usable ? NOT_CHEAP : chain[in->id] > deepest ? chain[in->id] : deepest;
      }
      if (deepest < MAX_CHAIN) len = deepest + 1;
    }
    if (r->held[i] && len <= MAX_CHAIN) {
      r->held[i] = false;
      r->redo[i] = true;
      dropped++;
    } else if (!r->held[i] && len <= MAX_CHAIN) {
      r->redo[i] = true; /* an intermediate of some chain, if one reads it */
    }
    chain[i] = r->held[i] ? 0 : len;
  }
  free(chain);
  return dropped;
}

/* The value that `reader` (an old backward op) reads for old forward value v. */
static int read_of(Remat *r, int v, const Op *reader);

/* The clone of old value v in reader's backward pass, made (with its chain) when missing. */
static int clone_in(Remat *r, int v, const Op *reader) {
  int w = reader->phase == PH_BWD_W && !r->joined; /* one pass: one clone serves B and W */
  if (r->clone[w][v] >= 0) return r->clone[w][v];
  const Op *src = r->old->ops[v];
  int in[8] = {0}, *inp = src->nin <= 8 ? in : malloc(sizeof(int) * (size_t)src->nin);
  if (!inp) die("out of memory");
  for (int j = 0; j < src->nin; j++) {
    inp[j] = read_of(r, src->in[j], reader);
    if (r->ntouched < r->old->nops) r->touched[r->ntouched++] = src->in[j];
  }
  Op *c = graph_copy(r->g, src, inp);
  if (inp != in) free(inp);
  c->phase = r->joined ? PH_BWD_B : reader->phase;
  if (r->ntouched < r->old->nops) r->touched[r->ntouched++] = v;
  c->fwd_of = r->map[v];
  c->stash = false;
  r->clone[w][v] = c->id;
  return c->id;
}

static int read_of(Remat *r, int v, const Op *reader) {
  const Op *src = r->old->ops[v];
  if (v < r->nfwd && r->redo[v] && !r->held[v] && src->stage == reader->stage) return clone_in(r, v, reader);
  return r->map[v];
}

/* Copies old backward op i (and the clones it reads, first) into the new graph. */
static void copy_backward(Remat *r, int i) {
  const Op *src = r->old->ops[i];
  int in[8] = {0}, *inp = src->nin <= 8 ? in : malloc(sizeof(int) * (size_t)src->nin);
  if (!inp) die("out of memory");
  for (int j = 0; j < src->nin; j++) inp[j] = read_of(r, src->in[j], src);
  Op *op = graph_copy(r->g, src, inp);
  if (inp != in) free(inp);
  r->map[i] = op->id;
  r->done[i] = true;
  if (src->kind == OP_PARAM_GRAD) op->key = r->map[src->key];
  if (src->fwd_of >= 0) op->fwd_of = r->map[src->fwd_of];
}

/* Siblings of the clones just made (r->touched: the forward values they are and read): the
 * elementwise input-gradient ops among the next PULL_WINDOW that read one of those values,
 * or an op pulled so, and whose other inputs exist already, copied right after the clones,
 * so that fuse.c puts them in the clones' kernel and the kernel IR's hash-consing shares
 * their common work (a recomputed SiLU and SiLU's gradient computing 1 + exp(-x) once).
 * Moving an op up past ops that cannot read it (they come before it) changes no value. */
enum { PULL_WINDOW = 48 };
static void pull_siblings(Remat *r, int from) {
  const Graph *g = r->old;
  int end = from + PULL_WINDOW < g->nops ? from + PULL_WINDOW : g->nops;
  for (bool more = r->ntouched > 0; more;) {
    more = false;
    for (int j = from; j < end; j++) {
      const Op *op = g->ops[j];
      if (r->done[j] || op->phase != PH_BWD_B || op_info[op->kind].cls != OPC_E) continue;
      bool ready = true, sibling = false;
      for (int k = 0; k < op->nin && ready; k++) {
        int v = op->in[k];
        if (v >= r->nfwd && !r->done[v] && !(g->ops[v]->nin == 0 && g->ops[v]->phase == PH_BWD_B)) ready = false;
        for (int t = 0; t < r->ntouched && !sibling; t++) sibling = r->touched[t] == v;
      }
      if (!ready || !sibling) continue;
      for (int k = 0; k < op->nin; k++) /* a constant it reads (full()), made first */
        if (op->in[k] >= r->nfwd && !r->done[op->in[k]]) copy_backward(r, op->in[k]);
      copy_backward(r, j);
      if (r->ntouched < g->nops) r->touched[r->ntouched++] = j;
      more = true;
    }
  }
}

Graph *remat_apply(Graph *old) {
  Remat r = {.old = old, .joined = part_joins_backward(old)};
  while (r.nfwd < old->nops && !is_backward(old->ops[r.nfwd])) r.nfwd++;
  if (r.nfwd == old->nops) return old;
  size_t n = (size_t)old->nops;
  r.held = calloc(n, 1);
  r.redo = calloc(n, 1);
  r.map = malloc(sizeof(int) * n);
  r.clone[0] = malloc(sizeof(int) * n);
  r.clone[1] = malloc(sizeof(int) * n);
  r.done = calloc(n, 1);
  r.touched = malloc(sizeof(int) * n);
  if (!r.done || !r.touched) die("out of memory");
  if (!r.held || !r.redo || !r.map || !r.clone[0] || !r.clone[1]) die("out of memory");
  find_held(&r);
  if (decide(&r) > 0) {
    for (size_t i = 0; i < n; i++) r.clone[0][i] = r.clone[1][i] = -1;
    r.g = graph_new(old->arena);
    Graph keep = *old;
    *r.g = keep;
    r.g->ops = NULL;
    r.g->nops = r.g->cap = 0;
    for (int i = 0; i < r.nfwd; i++) {
      const Op *src = old->ops[i];
      r.map[i] = graph_copy(r.g, src, src->in)->id; /* ids kept: the forward is first */
    }
    int *wait = malloc(sizeof(int) * (n + 1)), nwait = 0; /* weight-gradient ops held back */
    if (!wait) die("out of memory");
    for (int i = r.nfwd; i < old->nops; i++) {
      const Op *src = old->ops[i];
      if (!is_backward(src)) die("remat: forward op %%%d after the backward section", i);
      if (r.joined && src->phase == PH_BWD_W) {
        wait[nwait++] = i;
        continue;
      }
      if (r.done[i]) continue; /* pulled up beside a clone already */
      r.ntouched = 0;
      copy_backward(&r, i);
      pull_siblings(&r, i + 1);
      if (r.joined) {
        for (int k = 0; k < nwait; k++) {
          r.ntouched = 0;
          copy_backward(&r, wait[k]);
          pull_siblings(&r, i + 1);
        }
        nwait = 0;
      }
    }
    for (int k = 0; k < nwait; k++) copy_backward(&r, wait[k]);
    free(wait);
    r.g->loss = old->loss >= 0 ? r.map[old->loss] : -1;
    graph_verify(r.g);
  }
  Graph *out = r.g ? r.g : old;
  free(r.held);
  free(r.redo);
  free(r.map);
  free(r.clone[0]);
  free(r.clone[1]);
  free(r.done);
  free(r.touched);
  return out;
}
