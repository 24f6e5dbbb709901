/*
 * partition.c — cut the forward+backward graph by stage (see partition.h).
 *
 * Steps: (0) part_join_backward, called before remat.c: one backward pass under the
 * schedules that run W right after B; (1) @recompute: forward ops marked recompute that the backward reads are
 * cloned as PH_RECOMP ops into the backward section, each just before the first backward
 * op that reads it (they run in the input-gradient pass, or as PH_RECOMP_W in the weight
 * pass when only that reads them), and the backward reads the clones, so the originals
 * need not be held; (2) every op is
 * put in the pass list of its stage; stage-less ops (constants) are put in every
 * stage that reads them; (3) each input read on another stage than the one that
 * computes it becomes a transfer; (4) forward values read by the backward are
 * marked stash; (5) params read on several stages are listed as tied.
 */
#include "partition.h"

#include <stdlib.h>
#include <string.h>

void ivec_push(Arena *a, IntVec *iv, int x) {
  if (iv->n == iv->cap) {
    int cap = iv->cap ? iv->cap * 2 : 8;
    int *v = arena_alloc(a, sizeof(int) * (size_t)cap);
    if (iv->n) memcpy(v, iv->v, sizeof(int) * (size_t)iv->n);
    iv->v = v;
    iv->cap = cap;
  }
  iv->v[iv->n++] = x;
}

bool ivec_has(const IntVec *iv, int x) {
  for (int i = 0; i < iv->n; i++)
    if (iv->v[i] == x) return true;
  return false;
}

static bool is_leaf(const Op *op) { return op->kind == OP_INPUT || op->kind == OP_PARAM; }

static bool is_backward(const Op *op) { return op->phase == PH_BWD_B || op->phase == PH_BWD_W; }

/* Does reader (a backward op, or a forward op being recomputed) read the recompute copy of
 * its input in, rather than in itself? When in is recomputed (need) on reader's stage, and
 * a forward reader is of in's region: what another region made is that region's kept output. */
static bool reads_copy(const bool *need, const Op *reader, const Op *in) {
  return need[in->id] && in->stage == reader->stage && (is_backward(reader) || in->recompute == reader->recompute);
}

/* ---- (0) one backward pass where the schedule does not split it ----------------- */

/* The schedule runs W right after B (schedule.c's sched_emit: "the whole backward, then
 * the sends"), so splitting them gains no time, and it costs memory: a B pass over the
 * whole stage leaves every layer's output gradients and the activations their weight
 * gradients read alive until the W pass (GPT-2 124M, B 8, T 1024, one stage: 2.5 GB more
 * than the forward's peak). In one pass, in graph order, each layer's weight gradients
 * are made right after its input gradients and what they read dies there. */
bool part_joins_backward(const Graph *g) { return g->train.schedule != SCHED_ZB && g->train.schedule != SCHED_ZBV; }

void part_join_backward(Graph *g) {
  if (!part_joins_backward(g)) return;
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->phase == PH_BWD_W) g->ops[i]->phase = PH_BWD_B;
}

/* ---- (1) recompute ------------------------------------------------------------ */

/* Forward ops marked recompute that some backward op of the same stage reads,
 * directly or through other recompute ops: those are rerun before the backward.
 * A reader on another stage got the value by a transfer and reads that copy. */
static bool *recompute_needed(const Graph *g) {
  bool *need = calloc((size_t)g->nops, 1);
  for (int i = g->nops - 1; i >= 0; i--) {
    const Op *op = g->ops[i];
    bool reader = is_backward(op) || need[i];
    if (!reader) continue;
    for (int j = 0; j < op->nin; j++) {
      const Op *in = g->ops[op->in[j]];
      /* a needed forward op recomputes its region's inputs; what another region (or an
         unmarked op) made is kept: the region's boundary is its checkpoint */
      if (in->phase == PH_FWD && in->recompute && !is_leaf(in) && op_info[in->kind].cls != OPC_C &&
          in->stage == op->stage && (is_backward(op) || in->recompute == op->recompute))
        need[in->id] = true;
    }
  }
  /* an op's step writes all its results: a recomputed SDPA recomputes its RESULT (the lse) too */
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->kind == OP_RESULT && need[g->ops[i]->in[0]]) need[i] = true;
  return need;
}

enum { RB, RW }; /* the backward pass a copy runs in: input gradient, weight gradient */

/* For each needed op, the bytes a copy of it in the weight pass would keep held until that
 * pass: the copies of its region it reads, through the cheap ones (themselves remade there)
 * to the others (held from the input-gradient pass). An upper bound: a value read twice
 * counts twice (saturating), and a cheap input that is not remade after all holds its own
 * bytes, no more than these. */
static uint64_t *held_for_w(const Graph *g, const bool *need) {
  uint64_t *held = calloc((size_t)g->nops + 1, sizeof *held);
  for (int i = 0; i < g->nops; i++) { /* inputs first: each op's figure once (a chain h = h * h reads h twice) */
    const Op *op = g->ops[i];
    if (!need[i]) continue;
    for (int j = 0; j < op->nin; j++) {
      const Op *in = g->ops[op->in[j]];
      if (!reads_copy(need, op, in)) continue;
      uint64_t add = op_cheap_to_remake(in) ? held[in->id] : op_bytes(in);
      held[i] = held[i] > UINT64_MAX - add ? UINT64_MAX : held[i] + add;
    }
  }
  return held;
}

/* The copies each needed op gets: has[RB][i] when the input-gradient pass reads it,
 * directly or through other copies; has[RW][i] when the weight-gradient pass does (a
 * linear's input, read by its weight's gradient) and either the other pass does not, or
 * the op is cheap to make twice and its copy there holds no more than itself
 * (held_for_w). Under zb and zbv, whose weight pass waits, a value the weight pass reads
 * is then remade in it rather than held from the other pass until it: a LayerNorm's
 * output, which the input-gradient pass reads to remake the next product's output, is
 * made again in the weight pass from the mean and rstd, for that product's weight
 * (remat.c's rule for values outside @recompute; not a SwiGLU's product, made from two
 * products' outputs that would both be held). A copy in RW whose input has no RW copy
 * reads the RB one. An op and its RESULTs run as one step: they share their copies.
 * Without a separate weight pass every copy is in RB. */
static void recompute_passes(const Graph *g, const bool *need, bool *has[2]) {
  bool *want[2] = {calloc((size_t)g->nops, 1), calloc((size_t)g->nops, 1)};
  uint64_t *held = held_for_w(g, need);
  for (int i = g->nops - 1; i >= 0; i--) {
    const Op *op = g->ops[i];
    bool reads[2] = {op->phase == PH_BWD_B, op->phase == PH_BWD_W};
    if (need[i]) {
      has[RB][i] = want[RB][i];
      has[RW][i] = want[RW][i] && (!want[RB][i] || (op_cheap_to_remake(op) && held[i] <= op_bytes(op)));
      reads[RB] = has[RB][i], reads[RW] = has[RW][i];
    }
    for (int p = RB; p <= RW; p++) {
      if (!reads[p]) continue;
      for (int j = 0; j < op->nin; j++) {
        if (reads_copy(need, op, g->ops[op->in[j]])) want[p][op->in[j]] = true;
      }
    }
  }
  for (int i = 0; i < g->nops; i++)
    if (need[i] && g->ops[i]->kind == OP_RESULT)
      for (int p = RB; p <= RW; p++) has[p][i] = has[p][g->ops[i]->in[0]];
  free(want[RB]);
  free(want[RW]);
  free(held);
}

typedef struct CloneCtx {
  Graph *ng;
  const Graph *g;
  const bool *need;
  bool *has[2];
  int *map, *clone[2]; /* old id -> new id; -> its copy in each pass, -1 for none (yet) */
  int nfwd;
} CloneCtx;

/* The pass whose copy of o a reader in pass p reads: its own, else RB's. */
static int copy_pass(const CloneCtx *c, int o, int p) { return p == RW && c->has[RW][o] ? RW : RB; }

/* Copies src into g (a new id), each input read as src's stage must read it: its
 * recompute copy in src's pass (a forward op reads none) when that is on src's stage,
 * else its copy (map[]). */
static Op *copy_reading(CloneCtx *c, const Op *src) {
  int *in = src->nin ? arena_alloc(c->ng->arena, sizeof(int) * (size_t)src->nin) : NULL;
  int p = src->phase == PH_BWD_W ? RW : RB;
  for (int j = 0; j < src->nin; j++) {
    int o = src->in[j];
    in[j] = is_backward(src) && reads_copy(c->need, src, c->g->ops[o]) ? c->clone[copy_pass(c, o, p)][o] : c->map[o];
  }
  return graph_copy(c->ng, src, in);
}

/* The copy of forward op i in pass p (once), after the copies of its region it reads;
 * then the copies of i's results (an SDPA's lse: its step writes them all). */
static void emit_clone(CloneCtx *c, int i, int p) {
  if (c->clone[p][i] >= 0) return;
  const Op *src = c->g->ops[i];
  int *in = arena_alloc(c->ng->arena, sizeof(int) * (size_t)(src->nin ? src->nin : 1));
  for (int j = 0; j < src->nin; j++) {
    int o = src->in[j];
    if (!reads_copy(c->need, src, c->g->ops[o])) {
      in[j] = c->map[o];
      continue;
    }
    int q = copy_pass(c, o, p);
    emit_clone(c, o, q);
    in[j] = c->clone[q][o];
  }
  Op *op = graph_copy(c->ng, src, in);
  op->phase = p == RB ? PH_RECOMP : PH_RECOMP_W;
  op->fwd_of = c->map[i];
  c->clone[p][i] = op->id;
  for (int k = i + 1; k < c->nfwd; k++)
    if (c->need[k] && c->g->ops[k]->kind == OP_RESULT && c->g->ops[k]->in[0] == i) emit_clone(c, k, p);
}

/* Rebuilds g with the recompute copies in the backward section, each just before the first
 * op of its pass that reads it (so the pass holds one block's copies at a time, not all of
 * a stage's), when any op needs recomputing. */
static Graph *apply_recompute(Graph *g) {
  bool *need = recompute_needed(g);
  bool any = false;
  for (int i = 0; i < g->nops; i++) any |= need[i];
  if (!any) {
    free(need);
    return g;
  }
  Graph *ng = graph_new(g->arena);
  Graph keep = *g;
  *ng = keep;
  ng->ops = NULL;
  ng->nops = ng->cap = 0;
  size_t n = (size_t)g->nops;
  CloneCtx cc = {.ng = ng, .g = g, .need = need, .has = {calloc(n, 1), calloc(n, 1)}, .map = malloc(sizeof(int) * n),
                 .clone = {malloc(sizeof(int) * n), malloc(sizeof(int) * n)}};
  while (cc.nfwd < g->nops && !is_backward(g->ops[cc.nfwd])) cc.nfwd++;
  for (size_t i = 0; i < n; i++) cc.clone[RB][i] = cc.clone[RW][i] = -1;
  recompute_passes(g, need, cc.has);
  for (int i = 0; i < cc.nfwd; i++) cc.map[i] = copy_reading(&cc, g->ops[i])->id; /* no copies yet */
  for (int i = cc.nfwd; i < g->nops; i++) {
    const Op *src = g->ops[i];
    if (!is_backward(src)) die("partition: forward op %%%d after the backward section", i);
    int p = src->phase == PH_BWD_W ? RW : RB;
    for (int j = 0; j < src->nin; j++) { /* each copy just before the first op that reads it */
      int o = src->in[j];
      if (reads_copy(need, src, g->ops[o])) emit_clone(&cc, o, copy_pass(&cc, o, p));
    }
    Op *op = copy_reading(&cc, src);
    cc.map[i] = op->id;
    if (op->kind == OP_PARAM_GRAD) op->key = cc.map[src->key];
    if (src->fwd_of >= 0) op->fwd_of = cc.map[src->fwd_of];
  }
  ng->loss = g->loss >= 0 ? cc.map[g->loss] : -1;
  free(cc.map);
  for (int p = RB; p <= RW; p++) free(cc.clone[p]), free(cc.has[p]);
  free(need);
  graph_verify(ng);
  return ng;
}

/* ---- (2)-(5) the cut ---------------------------------------------------------- */

static int pass_of(const Op *op) {
  switch (op->phase) {
  case PH_FWD: return PASS_FWD;
  case PH_RECOMP: return PASS_BWD_B; /* among the backward ops that read them (apply_recompute) */
  case PH_RECOMP_W: return PASS_BWD_W;
  case PH_BWD_B: return PASS_BWD_B;
  case PH_BWD_W: return PASS_BWD_W;
  }
  return PASS_FWD;
}

/* Stage-less non-leaf op (a constant): computed on every stage that reads it, in the
 * earliest pass that reads it there. need[op][stage] = pass + 1, or 0. */
static void place_stageless(const Graph *g, int nst, unsigned char *need) {
  for (int i = g->nops - 1; i >= 0; i--) {
    const Op *op = g->ops[i];
    for (int s = 0; s < nst; s++) {
      int pass = -1;
      if (op->stage >= 0) {
        if (op->stage != s) continue;
        pass = pass_of(op);
      } else if (need[(size_t)i * nst + s]) {
        pass = need[(size_t)i * nst + s] - 1;
      } else {
        continue;
      }
      for (int j = 0; j < op->nin; j++) {
        const Op *in = g->ops[op->in[j]];
        if (in->stage >= 0 || is_leaf(in)) continue;
        unsigned char *n = &need[(size_t)in->id * nst + s];
        if (!*n || *n - 1 > pass) *n = (unsigned char)(pass + 1);
      }
    }
  }
}

static PartXfer *find_xfer(Partition *p, PtrVec *xs, int src, int dst, bool grad) {
  for (int i = 0; i < xs->n; i++) {
    PartXfer *x = xs->items[i];
    if (x->src == src && x->dst == dst && x->grad == grad) return x;
  }
  PartXfer *x = arena_alloc(p->g->arena, sizeof *x);
  x->src = src;
  x->dst = dst;
  x->grad = grad;
  vec_push(p->g->arena, xs, x);
  return x;
}

/* Records that stage s reads value in (made on another stage). */
static void add_crossing(Diag *d, Partition *p, PtrVec *xs, const Op *reader, int s, const Op *in) {
  bool grad = is_backward(in);
  int src = in->stage;
  if ((!grad && src > s) || (grad && src < s)) {
    diag_error(d, reader->loc, "value %%%d (%s) computed on stage %d is read on stage %d, against the pipeline's direction",
               in->id, op_name(in->kind), src, s);
    return;
  }
  PartXfer *x = find_xfer(p, xs, src, s, grad);
  if (!ivec_has(&x->vals, in->id)) ivec_push(p->g->arena, &x->vals, in->id);
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static int cmp_xfer(const void *a, const void *b) {
  const PartXfer *x = a, *y = b;
  if (x->grad != y->grad) return x->grad - y->grad;
  if (x->src != y->src) return x->src - y->src;
  return x->dst - y->dst;
}

/* Reads of stage s's op: leaves are noted, crossings become transfers. */
static void note_inputs(Diag *d, Partition *p, PtrVec *xs, const Op *op, int s) {
  const Graph *g = p->g;
  PartStage *st = &p->st[s];
  for (int j = 0; j < op->nin; j++) {
    const Op *in = g->ops[op->in[j]];
    if (in->kind == OP_PARAM) {
      if (!ivec_has(&st->params, in->id)) ivec_push(g->arena, &st->params, in->id);
    } else if (in->kind == OP_INPUT) {
      if (!ivec_has(&st->inputs, in->id)) ivec_push(g->arena, &st->inputs, in->id);
    } else if (in->stage >= 0 && in->stage != s) {
      add_crossing(d, p, xs, op, s, in);
    }
    if (in->phase == PH_FWD && !is_leaf(in) && (is_backward(op) || phase_is_recomp(op->phase)))
      ((Op *)in)->stash = true;
  }
}

static int find_logits(const Graph *g, int loss) {
  for (int i = loss; i >= 0; i--) {
    const Op *op = g->ops[i];
    if (op->kind == OP_CROSS_ENTROPY && (i == loss || op->stage == g->ops[loss]->stage)) return op->in[0];
  }
  return -1;
}

Partition *part_build(Diag *d, Graph *g0) {
  int errors = d->nerrors;
  Graph *g = apply_recompute(g0);
  Partition *p = arena_alloc(g->arena, sizeof *p);
  p->g = g;
  p->nstages = g->nstages > 0 ? g->nstages : 1;
  int nst = p->nstages;
  p->st = arena_alloc(g->arena, sizeof(PartStage) * (size_t)nst);
  for (int s = 0; s < nst; s++) p->st[s].loss = p->st[s].logits = -1;
  unsigned char *need = calloc((size_t)g->nops * (size_t)nst, 1);
  place_stageless(g, nst, need);
  PtrVec xs = {0};
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (is_leaf(op)) continue;
    for (int s = 0; s < nst; s++) {
      int pass;
      if (op->stage >= 0) {
        if (op->stage != s) continue;
        if (op->stage >= nst) die("partition: %%%d on stage %d of %d", i, op->stage, nst);
        pass = pass_of(op);
      } else if (need[(size_t)i * nst + s]) {
        pass = need[(size_t)i * nst + s] - 1;
      } else {
        continue;
      }
      ivec_push(g->arena, &p->st[s].pass[pass], i);
      note_inputs(d, p, &xs, op, s);
    }
  }
  free(need);
  if (g->loss >= 0) {
    int s = g->ops[g->loss]->stage >= 0 ? g->ops[g->loss]->stage : nst - 1;
    p->st[s].loss = g->loss;
    p->st[s].logits = find_logits(g, g->loss);
  }
  p->nxfers = xs.n;
  p->xfers = arena_alloc(g->arena, sizeof(PartXfer) * (size_t)(xs.n ? xs.n : 1));
  for (int i = 0; i < xs.n; i++) {
    p->xfers[i] = *(PartXfer *)xs.items[i];
    qsort(p->xfers[i].vals.v, (size_t)p->xfers[i].vals.n, sizeof(int), cmp_int);
  }
  qsort(p->xfers, (size_t)p->nxfers, sizeof(PartXfer), cmp_xfer);
  for (int i = 0; i < g->nops; i++) {
    if (g->ops[i]->kind != OP_PARAM) continue;
    int holders = 0;
    for (int s = 0; s < nst; s++) holders += ivec_has(&p->st[s].params, i);
    if (holders > 1) ivec_push(g->arena, &p->tied, i);
    /* a param nothing reads is still initialised, saved and checkpointed: stage 0 keeps
     * it (it gets no gradient and is never updated, as in PyTorch) */
    if (holders == 0) ivec_push(g->arena, &p->st[0].params, i);
  }
  for (int s = 0; s < nst; s++) {
    bool any = false;
    for (int k = 0; k < PASS__COUNT; k++) any |= p->st[s].pass[k].n > 0;
    if (!any) die("partition: stage %d has nothing to run (sema_place and the balancer give every stage work)", s);
  }
  if (d->nerrors > errors) return NULL;
  part_verify(p);
  return p;
}

/* ---- checks and dumps ------------------------------------------------------------- */

/* Is id in one of the stage's passes (each in id order: a binary search; a scan made
 * part_verify quadratic, most of a 40,000-op program's compile)? */
static bool stage_has(const PartStage *st, int id) {
  for (int k = 0; k < PASS__COUNT; k++) {
    const IntVec *v = &st->pass[k];
    int lo = 0, hi = v->n;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (v->v[mid] < id) lo = mid + 1;
      else hi = mid;
    }
    if (lo < v->n && v->v[lo] == id) return true;
  }
  return false;
}

void part_verify(const Partition *p) {
  const Graph *g = p->g;
  for (int s = 0; s < p->nstages; s++) /* the order first: stage_has relies on it */
    for (int k = 0; k < PASS__COUNT; k++)
      for (int i = 1; i < p->st[s].pass[k].n; i++)
        if (p->st[s].pass[k].v[i - 1] >= p->st[s].pass[k].v[i]) die("partition: stage %d pass %d not in id order", s, k);
  for (int s = 0; s < p->nstages; s++) {
    const PartStage *st = &p->st[s];
    for (int k = 0; k < PASS__COUNT; k++) {
      for (int i = 0; i < st->pass[k].n; i++) {
        const Op *op = g->ops[st->pass[k].v[i]];
        for (int j = 0; j < op->nin; j++) {
          const Op *in = g->ops[op->in[j]];
          if (is_leaf(in) || stage_has(st, in->id)) continue;
          bool arrives = false;
          for (int x = 0; x < p->nxfers; x++)
            if (p->xfers[x].dst == s && p->xfers[x].src == in->stage && ivec_has(&p->xfers[x].vals, in->id))
              arrives = true;
          if (!arrives) die("partition: %%%d on stage %d reads %%%d, which never arrives", op->id, s, in->id);
        }
      }
    }
  }
  for (int x = 0; x < p->nxfers; x++) {
    const PartXfer *t = &p->xfers[x];
    if (t->grad ? t->src <= t->dst : t->src >= t->dst) die("partition: transfer %d -> %d goes the wrong way", t->src, t->dst);
    for (int v = 0; v < t->vals.n; v++) { /* sent right after FWD / BWD_B: must be made there */
      Phase ph = g->ops[t->vals.v[v]]->phase;
      if (t->grad ? ph != PH_BWD_B : ph != PH_FWD)
        die("partition: %%%d (%s) cannot travel %d -> %d with the %s", t->vals.v[v], op_name(g->ops[t->vals.v[v]]->kind),
            t->src, t->dst, t->grad ? "gradients" : "activations");
    }
  }
}

static const char *const pass_names[PASS__COUNT] = {"fwd", "bwd_b", "bwd_w"};

const char *part_pass_name(int pass) { return pass_names[pass]; }

static void dump_list(FILE *out, const IntVec *iv) {
  for (int i = 0; i < iv->n; i++) fprintf(out, "%s%%%d", i ? " " : "", iv->v[i]);
}

void part_dump(FILE *out, const Partition *p) {
  const Graph *g = p->g;
  fprintf(out, "partition: %d stage%s, %d transfer%s, %d tied param%s\n", p->nstages, p->nstages == 1 ? "" : "s",
          p->nxfers, p->nxfers == 1 ? "" : "s", p->tied.n, p->tied.n == 1 ? "" : "s");
  for (int s = 0; s < p->nstages; s++) {
    const PartStage *st = &p->st[s];
    fprintf(out, "stage %d:\n  params:", s);
    for (int i = 0; i < st->params.n; i++) fprintf(out, " %s", g->ops[st->params.v[i]]->name);
    fprintf(out, "\n  inputs:");
    for (int i = 0; i < st->inputs.n; i++) fprintf(out, " %s", g->ops[st->inputs.v[i]]->name);
    fputc('\n', out);
    for (int k = 0; k < PASS__COUNT; k++) {
      if (!st->pass[k].n) continue;
      fprintf(out, "  %s (%d ops): ", part_pass_name(k), st->pass[k].n);
      dump_list(out, &st->pass[k]);
      fputc('\n', out);
    }
    int nstash = 0;
    for (int i = 0; i < st->pass[PASS_FWD].n; i++) nstash += g->ops[st->pass[PASS_FWD].v[i]]->stash;
    fprintf(out, "  stash: %d value%s held for the backward\n", nstash, nstash == 1 ? "" : "s");
    if (st->loss >= 0) fprintf(out, "  loss: %%%d\n", st->loss);
  }
  for (int x = 0; x < p->nxfers; x++) {
    const PartXfer *t = &p->xfers[x];
    fprintf(out, "%s %d -> %d: send/recv ", t->grad ? "grad" : "act ", t->src, t->dst);
    dump_list(out, &t->vals);
    fputc('\n', out);
  }
  for (int i = 0; i < p->tied.n; i++) {
    const Op *op = g->ops[p->tied.v[i]];
    fprintf(out, "tied %s: grad all-reduce among stages", op->name);
    for (int s = 0; s < p->nstages; s++)
      if (ivec_has(&p->st[s].params, op->id)) fprintf(out, " %d", s);
    fputc('\n', out);
  }
  fprintf(out, "\n");
  graph_dump(out, g);
}

/* How --emit=dot draws an op: collectives of the tp group in their own shapes and colours
 * (TP_ENTER and TP_SLICE move nothing between ranks), backward ops grey, the rest plain. */
static const char *dot_style(const Op *op, bool fwd) {
  switch (op->kind) {
  case OP_ALLREDUCE: return ", shape=hexagon, style=filled, fillcolor=\"#ffc078\"";
  case OP_ALLGATHER: return ", shape=invhouse, style=filled, fillcolor=\"#8ce99a\"";
  case OP_REDUCE_SCATTER: return ", shape=house, style=filled, fillcolor=\"#74c0fc\"";
  case OP_TP_ENTER: case OP_TP_SLICE: return ", shape=diamond, style=filled, fillcolor=\"#e5dbff\"";
  default: return fwd ? "" : ", style=filled, fillcolor=\"#eeeeee\"";
  }
}

/* The world ranks that run stage s: its pipeline rank of every (replica, tp index). */
static void dot_stage_label(FILE *out, const Partition *p, int s, int dp, int tp, int pp) {
  int pr = graph_stage_rank(p->g, s);
  fprintf(out, "    label=\"stage %d: rank%s", s, dp * tp > 1 ? "s" : "");
  for (int w = pr, k = 0; w < dp * tp * pp; w += pp) fprintf(out, "%s%d", k++ ? "," : " ", w);
  fprintf(out, " (pp %d", pr);
  if (dp > 1) fprintf(out, ", dp 0-%d", dp - 1);
  if (tp > 1) fprintf(out, ", tp 0-%d", tp - 1);
  fprintf(out, ")\";\n");
}

/* dp > 1: the stage's gradients all-reduced over the replicas (ZeRO-1: reduce-scattered,
 * each replica updating its 1/dp chunk of every param, the chunks all-gathered), one node
 * per stage. */
static void dot_dp_node(FILE *out, const Partition *p, int s, int dp) {
  const Graph *g = p->g;
  uint64_t bytes = 0;
  for (int i = 0; i < p->st[s].params.n; i++) {
    const Op *op = g->ops[p->st[s].params.v[i]];
    bytes += op_bytes(op);
  }
  fprintf(out, "    dp%d [label=\"dp %s over %d replicas\\n%d grads, %llu bytes%s\", shape=doubleoctagon, "
          "style=filled, fillcolor=\"#ffa8a8\"];\n", s, g->train.zero ? "reduce-scatter" : "all-reduce", dp,
          p->st[s].params.n, (unsigned long long)bytes,
          g->train.zero ? "\\nZeRO-1: each replica updates 1/dp of each param, then all-gather" : "");
}

void part_dot(FILE *out, const Partition *p) {
  const Graph *g = p->g;
  int dp = g->mesh.dp, pp = g->mesh.pp, tp = g->mesh.tp;
  char buf[160];
  fprintf(out, "digraph mpl {\n  label=\"model %s: mesh dp=%d pp=%d tp=%d, %d rank%s\";\n  labelloc=t;\n",
          g->model_name ? g->model_name : "?", dp, pp, tp, dp * pp * tp, dp * pp * tp == 1 ? "" : "s");
  fprintf(out, "  rankdir=TB;\n  node [shape=box, fontsize=10];\n");
  for (int s = 0; s < p->nstages; s++) {
    fprintf(out, "  subgraph cluster_stage%d {\n", s);
    dot_stage_label(out, p, s, dp, tp, pp);
    for (int k = 0; k < PASS__COUNT; k++)
      for (int i = 0; i < p->st[s].pass[k].n; i++) {
        const Op *op = g->ops[p->st[s].pass[k].v[i]];
        if (op->stage < 0) continue;
        fprintf(out, "    n%d [label=\"%%%d %s\\n%s\"%s];\n", op->id, op->id, op_name(op->kind),
                shape_str(&op->shape, buf, sizeof buf), dot_style(op, k == PASS_FWD));
      }
    if (dp > 1 && p->st[s].params.n) dot_dp_node(out, p, s, dp);
    fprintf(out, "  }\n");
  }
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->stage < 0) continue;
    for (int j = 0; j < op->nin; j++) {
      const Op *in = g->ops[op->in[j]];
      if (in->stage < 0) continue;
      if (in->stage != op->stage)
        fprintf(out, "  n%d -> n%d [style=dashed, color=red, label=\"%s\"];\n", in->id, op->id,
                is_backward(in) ? "send grad" : "send");
      else
        fprintf(out, "  n%d -> n%d;\n", in->id, op->id);
    }
  }
  fprintf(out, "}\n");
}
