/*
 * schedule.c — the schedule pass: pipeline schedules as per-rank instruction lists,
 * made from the schedule's rule (sched_build) for the stages, transfers and tied params
 * of a partition and the cost model's pass times (sched_partition). The proof, the
 * timed simulation and the dump are sched_sim.c's.
 *
 * How a schedule is made:
 *  1. Each rank gets an order of its forward (F) and input-gradient backward (B)
 *     passes, from the schedule's rule (sched_order_*).
 *  2. A timed list scheduler (gen_run) plays all ranks together with the pass
 *     durations and records, per rank, the sequence of passes it really runs; the
 *     weight-gradient pass W follows its B at once, except under zb and zbv, where W
 *     waits in a queue and fills the time a rank would spend waiting. What comes out
 *     is one possible execution, so it respects every data dependency. zbv has no
 *     fixed order: each rank picks its next pass as it goes (zbv_pick).
 *  3. Messages are put around the passes (sched_emit): recvs right before the pass
 *     that needs them (or earlier, to take a pair of ranks' messages in the order
 *     they were sent: fifo_order), sends right after the pass that made them, then
 *     the tied all-reduces and the optimizer step. Outside zb and zbv the backward is one pass
 *     B W: its gradients are sent after W (as the textbook bubble assumes); under zb
 *     and zbv they leave right after B, which is the point of splitting the backward.
 *  4. sched_verify (sched_sim.c) proves the lists with no help from steps 1-3.
 *
 * Micro-batch counts that are not a multiple of pp, or smaller than pp:
 *  - sequential, gpipe: nothing depends on pp; any m works as is.
 *  - 1f1b, zb: rank r warms up with min(pp - r - 1, m) forwards, then alternates one
 *    forward and one backward while forwards remain, then drains the backwards. With
 *    m < pp the lower ranks simply never reach a steady state.
 *  - interleaved(v): micro-batches go in groups (Megatron's order: for each group,
 *    chunk 0 of every micro-batch of the group, then chunk 1, ...; backwards with the
 *    chunks reversed). m is split into max(1, m / pp) groups as even as possible,
 *    larger groups first, so every group holds at least pp micro-batches when m >= pp
 *    (with m a multiple of pp these are Megatron's groups of pp; when m < pp the only
 *    group holds m). Warm-up is (pp - r - 1) * 2 + (v - 1) * (size of the first group)
 *    forwards, capped by m * v. If that order would deadlock (possible with a short last group),
 *    the warm-up of the ranks found stuck grows by one until it does not; at the cap
 *    the order is all forwards then all backwards, which never deadlocks.
 *  - zbv (ZB-V): rank r holds chunk 0 = stage r and chunk 1 = stage 2pp-1-r, so a
 *    micro-batch goes down the ranks and back up them, and its loss and its first
 *    backward are on rank 0. Each chunk's F's and B's go in micro-batch order; a rank
 *    picks, among the passes whose inputs are there, by a priority (zbv_before: B
 *    first, the oldest micro-batch first, or F first); a new micro-batch enters chunk
 *    0 only while the rank holds fewer than 2pp chunk activations (F done, B not): the
 *    peak of 1f1b's rank 0, whatever m. If that could deadlock, the limit of the ranks
 *    found stuck grows by one (at 2m nothing holds a forward back). Each priority is
 *    played with pp and with 2pp W's held back, and the shortest of the six runs (by
 *    the pass times given) is kept, as the ZB-V authors' scheduler searches its
 *    heuristics; with equal passes and m >= pp the bubble is (pp-1)/(6m+pp-1), half
 *    of zb's idle time.
 *
 * Invariants: see sched.h. No global mutable state; scratch memory lives in a local
 * Arena freed before returning.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

/* ---- step 1: the per-rank order of F and B passes --------------------------- */

/* A growing list of instructions (a rank's passes, then its whole stream). */
typedef struct InsList {
  Ins *p;
  int n, cap;
} InsList;

static void il_push(Arena *a, InsList *l, int kind, int stage, int peer, int mb) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 16;
    Ins *np = arena_alloc(a, sizeof(Ins) * cap);
    if (l->n)
      memcpy(np, l->p, sizeof(Ins) * l->n);
    l->p = np;
    l->cap = cap;
  }
  l->p[l->n++] = (Ins){kind, stage, peer, mb};
}

/* sequential: micro-batch by micro-batch, all forwards then all backwards. */
static void order_sequential(Arena *a, const Schedule *s, int r, InsList *l) {
  for (int mb = 0; mb < s->m; mb++) {
    for (int st = 0; st < s->nstages; st++)
      if (sched_stage_rank(s, st) == r)
        il_push(a, l, INS_FWD, st, -1, mb);
    for (int st = s->nstages - 1; st >= 0; st--)
      if (sched_stage_rank(s, st) == r)
        il_push(a, l, INS_BWD_B, st, -1, mb);
  }
}

/* gpipe: every forward in micro-batch order, then every backward in micro-batch order. */
static void order_gpipe(Arena *a, const Schedule *s, int r, InsList *l) {
  for (int mb = 0; mb < s->m; mb++)
    for (int st = 0; st < s->nstages; st++)
      if (sched_stage_rank(s, st) == r)
        il_push(a, l, INS_FWD, st, -1, mb);
  for (int mb = 0; mb < s->m; mb++)
    for (int st = s->nstages - 1; st >= 0; st--)
      if (sched_stage_rank(s, st) == r)
        il_push(a, l, INS_BWD_B, st, -1, mb);
}

/*
 * Interleaves a forward sequence and a backward sequence of `total` passes each:
 * `warmup` forwards, then one forward and one backward while forwards remain, then
 * the remaining backwards (Megatron's 1F1B loop).
 */
static void order_one_f_one_b(Arena *a, InsList *l, const Ins *fwd, const Ins *bwd,
                              int total, int warmup) {
  if (warmup > total)
    warmup = total;
  int f = 0, b = 0;
  while (f < warmup)
    il_push(a, l, INS_FWD, fwd[f].stage, -1, fwd[f].mb), f++;
  while (f < total) {
    il_push(a, l, INS_FWD, fwd[f].stage, -1, fwd[f].mb), f++;
    il_push(a, l, INS_BWD_B, bwd[b].stage, -1, bwd[b].mb), b++;
  }
  while (b < total)
    il_push(a, l, INS_BWD_B, bwd[b].stage, -1, bwd[b].mb), b++;
}

/* 1f1b and zb (v = 1): warm-up of min(pp - r - 1, m) forwards. */
static void order_1f1b(Arena *a, const Schedule *s, int r, InsList *l) {
  Ins *seq = arena_alloc(a, sizeof(Ins) * s->m);
  for (int mb = 0; mb < s->m; mb++)
    seq[mb] = (Ins){INS_FWD, r, -1, mb};
  order_one_f_one_b(a, l, seq, seq, s->m, s->pp - r - 1);
}

/*
 * Size of micro-batch group gi of interleaved: m split into max(1, m / pp) groups as
 * even as can be, the larger ones first (so each holds at least pp when m >= pp).
 */
static int interleaved_group(const Schedule *s, int gi) {
  int ngroups = s->m / s->pp > 0 ? s->m / s->pp : 1;
  return s->m / ngroups + (gi < s->m % ngroups);
}

/*
 * interleaved(v): Megatron's order over (chunk, mb) in groups of pp micro-batches, the
 * last group holding the rest; backwards take the chunks in reverse.
 */
static void order_interleaved(Arena *a, const Schedule *s, int r, int warmup, InsList *l) {
  int total = s->m * s->v, nf = 0, nb = 0;
  Ins *fwd = arena_alloc(a, sizeof(Ins) * total);
  Ins *bwd = arena_alloc(a, sizeof(Ins) * total);
  for (int gi = 0, g0 = 0; g0 < s->m; g0 += interleaved_group(s, gi++)) {
    int gs = interleaved_group(s, gi);
    for (int c = 0; c < s->v; c++) {
      for (int mb = g0; mb < g0 + gs; mb++) {
        fwd[nf++] = (Ins){INS_FWD, c * s->pp + r, -1, mb};
        bwd[nb++] = (Ins){INS_BWD_B, (s->v - 1 - c) * s->pp + r, -1, mb};
      }
    }
  }
  order_one_f_one_b(a, l, fwd, bwd, total, warmup);
}

/* ---- step 2: the timed list scheduler ------------------------------------------ */

typedef struct Gen {
  const Schedule *s;
  const double *F, *B, *W;
  bool defer_w;      /* zb, zbv: W waits in a queue */
  int w_limit;       /* most W's a rank may hold back */
  InsList *order;   /* per rank: F and B passes (not zbv) */
  int *pos;          /* per rank: next pass of order */
  int (*zf)[2], (*zb)[2]; /* zbv, per rank and chunk: the next micro-batch to run F, B */
  int *zcap;         /* zbv, per rank: most chunk activations held (F done, B not) */
  int zprio;         /* zbv: which pass goes first (ZBV_*) */
  double *clock;     /* per rank */
  double *fend, *bend; /* per (stage, mb): end time, -1 before it ran */
  Ins **wq;          /* per rank: FIFO of deferred W's */
  int *wq_head, *wq_tail;
  InsList *out;     /* per rank: the passes as run (F, B, W) */
  bool *stuck;       /* per rank, on failure */
} Gen;

enum { ACT_DONE, ACT_BLOCKED, ACT_NEXT, ACT_W };

static double gen_dep_end(const Gen *g, const double *end, int stage, int mb) {
  double t = end[stage * g->s->m + mb];
  return t < 0 ? INFINITY : t;
}

/* When the inputs of pass p are there (INFINITY: not yet known). */
static double gen_ready(const Gen *g, const Ins *p) {
  const Schedule *s = g->s;
  double t = 0;
  for (int e = 0; e < s->nedges; e++) {
    int src = s->edges[e][0], dst = s->edges[e][1];
    if (p->kind == INS_FWD && dst == p->stage && (s->flow[e] & SCHED_ACT))
      t = fmax(t, gen_dep_end(g, g->fend, src, p->mb));
    if (p->kind == INS_BWD_B && src == p->stage && (s->flow[e] & SCHED_GRAD))
      t = fmax(t, gen_dep_end(g, g->bend, dst, p->mb));
  }
  if (p->kind == INS_BWD_B)
    t = fmax(t, gen_dep_end(g, g->fend, p->stage, p->mb));
  return t;
}

/* zbv's priorities among the passes that are ready: a B first (older micro-batch, then
 * chunk 1); the older micro-batch first (a B on a tie); an F first (chunk 1's). */
enum { ZBV_B_FIRST, ZBV_OLDEST_FIRST, ZBV_F_FIRST, ZBV__COUNT };

/* Does candidate c go before the pick p under priority prio? Candidates come B chunk 1,
 * B chunk 0, F chunk 1, F chunk 0: the earlier one wins a tie. */
static bool zbv_before(int prio, const Ins *c, const Ins *p) {
  bool cb = c->kind == INS_BWD_B, pb = p->kind == INS_BWD_B;
  switch (prio) {
  case ZBV_B_FIRST: return (cb && !pb) || (cb == pb && c->mb < p->mb);
  case ZBV_OLDEST_FIRST: return c->mb < p->mb || (c->mb == p->mb && cb && !pb);
  default: return (!cb && pb) || (cb == pb && c->mb < p->mb);
  }
}

/* zbv: the stage of chunk c (0 or 1) of rank r. */
static int zbv_stage(const Schedule *s, int r, int c) { return c ? 2 * s->pp - 1 - r : r; }

/*
 * zbv: rank r's next pass at time t (see the top of the file): among the passes whose
 * inputs are there by t, a B before an F, the older micro-batch first, chunk 1 on a
 * tie; a new micro-batch enters chunk 0 only under the rank's activation limit. False
 * when none is ready by t; *ready gets the earliest known ready time (INFINITY: none).
 */
static bool zbv_pick(const Gen *g, int r, double t, Ins *pick, double *ready) {
  const Schedule *s = g->s;
  int m = s->m, *f = g->zf[r], *b = g->zb[r];
  int held = f[0] + f[1] - b[0] - b[1];
  Ins cand[4];
  int n = 0;
  for (int c = 1; c >= 0; c--) /* B: chunk 1's comes first for one micro-batch */
    if (b[c] < f[c]) cand[n++] = (Ins){INS_BWD_B, zbv_stage(s, r, c), -1, b[c]};
  if (f[1] < f[0]) cand[n++] = (Ins){INS_FWD, zbv_stage(s, r, 1), -1, f[1]};
  if (f[0] < m && held < g->zcap[r]) cand[n++] = (Ins){INS_FWD, zbv_stage(s, r, 0), -1, f[0]};
  bool found = false;
  *ready = INFINITY;
  for (int i = 0; i < n; i++) {
    double rt = gen_ready(g, &cand[i]);
    *ready = fmin(*ready, rt);
    if (rt > t)
      continue;
    if (!found || zbv_before(g->zprio, &cand[i], pick))
      *pick = cand[i], found = true;
  }
  return found;
}

/* Rank r has no F or B left. */
static bool gen_passes_done(const Gen *g, int r) {
  if (g->s->kind != SCHED_ZBV)
    return g->pos[r] == g->order[r].n;
  return g->zb[r][0] == g->s->m && g->zb[r][1] == g->s->m;
}

/* When the next pass of rank r's fixed order can start (INFINITY: not yet known). */
static double gen_order_ready(const Gen *g, int r, Ins *pick) {
  *pick = g->order[r].p[g->pos[r]];
  return gen_ready(g, pick);
}

/* What rank r does next, at what time, and for ACT_NEXT which pass. */
static int gen_decide(const Gen *g, int r, double *when, Ins *pick) {
  int pending = g->wq_tail[r] - g->wq_head[r];
  *when = g->clock[r];
  if (gen_passes_done(g, r))
    return pending ? ACT_W : ACT_DONE;
  if (g->defer_w && pending >= g->w_limit)
    return ACT_W;
  double ready;
  if (g->s->kind == SCHED_ZBV) {
    if (zbv_pick(g, r, g->clock[r], pick, &ready))
      return ACT_NEXT;
  } else {
    ready = gen_order_ready(g, r, pick);
    if (ready <= g->clock[r])
      return ACT_NEXT;
  }
  if (pending)
    return ACT_W;
  if (ready == INFINITY)
    return ACT_BLOCKED;
  *when = ready;
  if (g->s->kind == SCHED_ZBV && !zbv_pick(g, r, ready, pick, &ready))
    die("zbv: no pass ready at %g", *when);
  return ACT_NEXT;
}

static void gen_run_w(Arena *a, Gen *g, int r) {
  Ins w = g->wq[r][g->wq_head[r]++];
  g->clock[r] += sched_pass_time(g->W, w.stage);
  il_push(a, &g->out[r], INS_BWD_W, w.stage, -1, w.mb);
}

static void gen_run_next(Arena *a, Gen *g, int r, double when, Ins p) {
  int k = p.stage * g->s->m + p.mb;
  if (g->s->kind != SCHED_ZBV)
    g->pos[r]++;
  else
    (p.kind == INS_FWD ? g->zf : g->zb)[r][p.stage != r]++;
  bool fwd = p.kind == INS_FWD;
  g->clock[r] = when + sched_pass_time(fwd ? g->F : g->B, p.stage);
  (fwd ? g->fend : g->bend)[k] = g->clock[r];
  il_push(a, &g->out[r], p.kind, p.stage, -1, p.mb);
  if (fwd)
    return;
  g->wq[r][g->wq_tail[r]++] = (Ins){INS_BWD_W, p.stage, -1, p.mb};
  if (g->defer_w)
    return;
  gen_run_w(a, g, r); /* one backward pass: its gradient leaves after W */
  g->bend[k] = g->clock[r];
}

/*
 * Plays all ranks, always advancing the one that acts earliest (ties: lowest rank).
 * False if every unfinished rank waits for a pass that is not yet scheduled; the
 * stuck ranks are marked.
 */
static bool gen_run(Arena *a, Gen *g) {
  const Schedule *s = g->s;
  for (;;) {
    int best = -1, act = ACT_DONE, nblocked = 0;
    double best_t = INFINITY;
    Ins best_pick = {0};
    for (int r = 0; r < s->pp; r++) {
      double t;
      Ins pick;
      int x = gen_decide(g, r, &t, &pick);
      g->stuck[r] = x == ACT_BLOCKED;
      nblocked += x == ACT_BLOCKED;
      if ((x == ACT_NEXT || x == ACT_W) && (best < 0 || t < best_t))
        best = r, best_t = t, act = x, best_pick = pick;
    }
    if (best < 0)
      return nblocked == 0;
    if (act == ACT_W)
      gen_run_w(a, g, best);
    else
      gen_run_next(a, g, best, best_t, best_pick);
  }
}

static Gen *gen_new(Arena *a, const Schedule *s, const SchedSpec *spec) {
  Gen *g = arena_alloc(a, sizeof *g);
  int pp = s->pp, n = s->nstages * s->m;
  g->s = s;
  g->F = spec->F, g->B = spec->B, g->W = spec->W;
  g->defer_w = s->kind == SCHED_ZB || s->kind == SCHED_ZBV;
  g->w_limit = pp;
  g->order = arena_alloc(a, sizeof(InsList) * pp);
  g->out = arena_alloc(a, sizeof(InsList) * pp);
  g->pos = arena_alloc(a, sizeof(int) * pp);
  g->wq_head = arena_alloc(a, sizeof(int) * pp);
  g->wq_tail = arena_alloc(a, sizeof(int) * pp);
  g->clock = arena_alloc(a, sizeof(double) * pp);
  g->stuck = arena_alloc(a, sizeof(bool) * pp);
  g->wq = arena_alloc(a, sizeof(Ins *) * pp);
  for (int r = 0; r < pp; r++)
    g->wq[r] = arena_alloc(a, sizeof(Ins) * (size_t)s->v * s->m);
  g->zf = arena_alloc(a, sizeof(int[2]) * pp);
  g->zb = arena_alloc(a, sizeof(int[2]) * pp);
  g->zcap = arena_alloc(a, sizeof(int) * pp);
  g->fend = arena_alloc(a, sizeof(double) * n);
  g->bend = arena_alloc(a, sizeof(double) * n);
  for (int i = 0; i < n; i++)
    g->fend[i] = g->bend[i] = -1;
  return g;
}

/* Fills g->order for every rank; warmup is interleaved's warm-up, zbv's activation limit. */
static void gen_orders(Arena *a, Gen *g, const int *warmup) {
  const Schedule *s = g->s;
  for (int r = 0; r < s->pp; r++) {
    InsList *l = &g->order[r];
    switch (s->kind) {
    case SCHED_SEQUENTIAL: order_sequential(a, s, r, l); break;
    case SCHED_GPIPE: order_gpipe(a, s, r, l); break;
    case SCHED_1F1B: case SCHED_ZB: order_1f1b(a, s, r, l); break;
    case SCHED_INTERLEAVED: order_interleaved(a, s, r, warmup[r], l); break;
    case SCHED_ZBV: g->zcap[r] = warmup[r]; break; /* picked as it runs (zbv_pick) */
    }
  }
}

/*
 * Runs the list scheduler; for interleaved, grows the warm-up of stuck ranks until
 * the order can run (at warm-up m*v on every rank it always can); for zbv, their
 * activation limit (at 2m it holds nothing back).
 */
static Gen *gen_schedule_one(Arena *a, const Schedule *s, const SchedSpec *spec, int variant) {
  int total = s->m * s->v;
  int *warmup = arena_alloc(a, sizeof(int) * s->pp);
  for (int r = 0; r < s->pp; r++) {
    warmup[r] = (s->pp - r - 1) * 2 + (s->v - 1) * interleaved_group(s, 0);
    if (s->kind == SCHED_ZBV)
      warmup[r] = 2 * s->pp;
    if (warmup[r] > total)
      warmup[r] = total;
  }
  for (;;) {
    Gen *g = gen_new(a, s, spec);
    g->zprio = variant % ZBV__COUNT;
    if (variant >= ZBV__COUNT)
      g->w_limit = 2 * s->pp;
    gen_orders(a, g, warmup);
    if (gen_run(a, g))
      return g;
    bool grew = false;
    for (int r = 0; r < s->pp; r++)
      if (g->stuck[r] && warmup[r] < total)
        warmup[r]++, grew = true;
    if (!grew || (s->kind != SCHED_INTERLEAVED && s->kind != SCHED_ZBV))
      return NULL;
  }
}

static double gen_makespan(const Gen *g) {
  double t = 0;
  for (int r = 0; r < g->s->pp; r++)
    t = fmax(t, g->clock[r]);
  return t;
}

/*
 * The list scheduler's run; for zbv the shortest of its variants (each priority, with
 * pp or 2pp W's held back), the first of them on a tie.
 */
static Gen *gen_schedule(Arena *a, const Schedule *s, const SchedSpec *spec) {
  Gen *best = gen_schedule_one(a, s, spec, 0);
  for (int v = 1; s->kind == SCHED_ZBV && v < 2 * ZBV__COUNT; v++) {
    Gen *g = gen_schedule_one(a, s, spec, v);
    if (g && (!best || gen_makespan(g) < gen_makespan(best)))
      best = g;
  }
  return best;
}

/* ---- step 3: messages around the passes ------------------------------------------ */

/* Recvs for the inputs of pass p (before = true) or sends of its outputs. */
static void emit_messages(Arena *a, const Schedule *s, InsList *l, const Ins *p, bool before) {
  for (int e = 0; e < s->nedges; e++) {
    int src = s->edges[e][0], dst = s->edges[e][1];
    if (sched_stage_rank(s, src) == sched_stage_rank(s, dst))
      continue;
    bool act = s->flow[e] & SCHED_ACT, grad = s->flow[e] & SCHED_GRAD;
    if (act && p->kind == INS_FWD && before && dst == p->stage)
      il_push(a, l, INS_RECV_ACT, dst, src, p->mb);
    if (act && p->kind == INS_FWD && !before && src == p->stage)
      il_push(a, l, INS_SEND_ACT, src, dst, p->mb);
    if (grad && p->kind == INS_BWD_B && before && src == p->stage)
      il_push(a, l, INS_RECV_GRAD, src, dst, p->mb);
    if (grad && p->kind == INS_BWD_B && !before && dst == p->stage)
      il_push(a, l, INS_SEND_GRAD, dst, src, p->mb);
  }
}

static void sched_emit(Arena *a, Schedule *s, const Gen *g) {
  for (int r = 0; r < s->pp; r++) {
    InsList l = {0};
    for (int i = 0; i < g->out[r].n; i++) {
      const Ins *p = &g->out[r].p[i];
      emit_messages(a, s, &l, p, true);
      il_push(a, &l, p->kind, p->stage, -1, p->mb);
      if (p->kind == INS_BWD_B && !g->defer_w) { /* the whole backward, then the sends */
        const Ins *w = &g->out[r].p[++i];
        if (w->kind != INS_BWD_W || w->stage != p->stage || w->mb != p->mb)
          die("bwd_b(stage %d, mb %d) not followed by its bwd_w", p->stage, p->mb);
        il_push(a, &l, INS_BWD_W, w->stage, -1, w->mb);
      }
      emit_messages(a, s, &l, p, false);
    }
    for (int t = 0; t < s->ntied; t++)
      if (sched_tied_on_rank(s, t, r))
        il_push(a, &l, INS_ALLREDUCE_TIED, t, -1, -1);
    il_push(a, &l, INS_OPTIMIZER_STEP, -1, -1, -1);
    s->ins[r] = l.p;
    s->nins[r] = l.n;
  }
}

/*
 * The runtime's message queues are FIFO per pair of ranks, so rank b must receive rank
 * a's messages in the order a sends them. When b needs a message before an older one
 * (two streams share a pair of ranks: zbv's activations down and gradients back up,
 * interleaved's chunks), the older ones are received first, right before it. That never
 * makes b wait longer: a sent them before the one b waits for.
 */
static void fifo_order(Arena *a, Arena *tmp, Schedule *s) {
  int nmsg = 2 * s->nedges * s->m + 1, pp = s->pp;
  int *pos = arena_alloc(tmp, sizeof(int) * nmsg), *cnt = arena_alloc(tmp, sizeof(int) * pp * pp);
  Ins **sends = arena_alloc(tmp, sizeof(Ins *) * pp * pp); /* [a * pp + b]: a's sends to b */
  for (int r = 0; r < pp; r++)
    for (int i = 0; i < s->nins[r]; i++)
      if (s->ins[r][i].kind == INS_SEND_ACT || s->ins[r][i].kind == INS_SEND_GRAD)
        cnt[r * pp + sched_peer_rank(s, &s->ins[r][i])]++;
  for (int k = 0; k < pp * pp; k++)
    sends[k] = arena_alloc(tmp, sizeof(Ins) * (cnt[k] + 1)), cnt[k] = 0;
  for (int r = 0; r < pp; r++)
    for (int i = 0; i < s->nins[r]; i++) {
      const Ins *in = &s->ins[r][i];
      if (in->kind != INS_SEND_ACT && in->kind != INS_SEND_GRAD)
        continue;
      int k = r * pp + sched_peer_rank(s, in);
      pos[sched_msg_index(s, in)] = cnt[k];
      sends[k][cnt[k]++] = *in;
    }
  for (int b = 0; b < pp; b++) {
    InsList l = {0};
    int *next = arena_alloc(tmp, sizeof(int) * pp);
    for (int i = 0; i < s->nins[b]; i++) {
      const Ins *in = &s->ins[b][i];
      if (in->kind != INS_RECV_ACT && in->kind != INS_RECV_GRAD) {
        il_push(a, &l, in->kind, in->stage, in->peer_stage, in->mb);
        continue;
      }
      int src = sched_peer_rank(s, in), q = pos[sched_msg_index(s, in)];
      for (; next[src] <= q; next[src]++) { /* this message and the older ones not yet received */
        const Ins *snd = &sends[src * pp + b][next[src]];
        il_push(a, &l, snd->kind == INS_SEND_ACT ? INS_RECV_ACT : INS_RECV_GRAD, snd->peer_stage, snd->stage,
                snd->mb);
      }
    }
    s->ins[b] = l.p;
    s->nins[b] = l.n;
  }
}

/* ---- sched_build ------------------------------------------------------------------ */

static int cmp_edge(const void *x, const void *y) {
  const int *a = x, *b = y;
  return a[0] != b[0] ? a[0] - b[0] : a[1] - b[1];
}

static bool spec_check(const SchedSpec *sp, char *err, size_t errlen) {
  if ((unsigned)sp->kind >= SCHED__COUNT)
    return sched_errf(err, errlen, "unknown schedule kind %d", (int)sp->kind), false;
  if (sp->pp < 1 || sp->pp > SCHED_MAX_PP)
    return sched_errf(err, errlen, "pp must be between 1 and %d, not %d", SCHED_MAX_PP, sp->pp), false;
  if (sp->m < 1)
    return sched_errf(err, errlen, "microbatches must be at least 1, not %d", sp->m), false;
  if (sp->kind == SCHED_ZBV && sp->v != 2)
    return sched_errf(err, errlen, "%d model chunks per rank: zbv takes 2", sp->v), false;
  if (sp->v < 1 || (sp->v != 1 && sp->kind != SCHED_INTERLEAVED && sp->kind != SCHED_ZBV))
    return sched_errf(err, errlen, "%d model chunks per rank: only interleaved(v) and zbv take v > 1",
                sp->v), false;
  if ((long long)sp->pp * sp->v * sp->m > (1 << 24))
    return sched_errf(err, errlen, "pp * v * microbatches = %lld is too large",
                (long long)sp->pp * sp->v * sp->m), false;
  int S = sp->pp * sp->v;
  for (int e = 0; e < sp->nedges; e++) {
    int a = sp->edges[e][0], b = sp->edges[e][1];
    if (a < 0 || b >= S || a >= b)
      return sched_errf(err, errlen, "bad stage edge %d -> %d (stages are 0 .. %d, and data flows "
                  "only to a later stage)", a, b, S - 1), false;
  }
  const double *costs[] = {sp->F, sp->B, sp->W};
  for (int c = 0; c < 3; c++)
    for (int i = 0; costs[c] && i < S; i++)
      if (!(costs[c][i] >= 0 && isfinite(costs[c][i])))
        return sched_errf(err, errlen, "pass duration %g of stage %d is not a finite number >= 0",
                    costs[c][i], i), false;
  for (int t = 0; t < sp->ntied; t++)
    for (int i = 0; i < sp->tied[t].nstages; i++)
      if (sp->tied[t].stages[i] < 0 || sp->tied[t].stages[i] >= S)
        return sched_errf(err, errlen, "tied group %d names stage %d, not in 0 .. %d", t,
                    sp->tied[t].stages[i], S - 1), false;
  return true;
}

static Schedule *sched_new(Arena *a, const SchedSpec *sp) {
  Schedule *s = arena_alloc(a, sizeof *s);
  s->kind = sp->kind;
  s->pp = sp->pp, s->v = sp->v, s->m = sp->m, s->nstages = sp->pp * sp->v;
  /* (src, dst, flow) sorted, duplicates merged with their flows joined */
  int (*tr)[3] = arena_alloc(a, sizeof(int[3]) * (sp->nedges + 1));
  for (int e = 0; e < sp->nedges; e++)
    tr[e][0] = sp->edges[e][0], tr[e][1] = sp->edges[e][1], tr[e][2] = sp->flow ? sp->flow[e] : SCHED_ACT | SCHED_GRAD;
  qsort(tr, sp->nedges, sizeof(int[3]), cmp_edge);
  s->edges = arena_alloc(a, sizeof(int[2]) * (sp->nedges + 1));
  s->flow = arena_alloc(a, (size_t)sp->nedges + 1);
  for (int e = 0; e < sp->nedges; e++) {
    if (s->nedges > 0 && cmp_edge(s->edges[s->nedges - 1], tr[e]) == 0) {
      s->flow[s->nedges - 1] |= (uint8_t)tr[e][2];
      continue;
    }
    s->edges[s->nedges][0] = tr[e][0], s->edges[s->nedges][1] = tr[e][1];
    s->flow[s->nedges++] = (uint8_t)tr[e][2];
  }
  s->ntied = sp->ntied;
  s->tied = arena_alloc(a, sizeof(TiedGroup) * (sp->ntied + 1));
  for (int t = 0; t < sp->ntied; t++) {
    int *st = arena_alloc(a, sizeof(int) * (sp->tied[t].nstages + 1));
    memcpy(st, sp->tied[t].stages, sizeof(int) * sp->tied[t].nstages);
    s->tied[t] = (TiedGroup){sp->tied[t].nstages, st};
  }
  s->nins = arena_alloc(a, sizeof(int) * s->pp);
  s->ins = arena_alloc(a, sizeof(Ins *) * s->pp);
  return s;
}

Schedule *sched_build(Arena *a, const SchedSpec *spec, char *err, size_t errlen) {
  if (!spec_check(spec, err, errlen))
    return NULL;
  Schedule *s = sched_new(a, spec);
  Arena scratch;
  arena_init(&scratch);
  Gen *g = gen_schedule(&scratch, s, spec);
  if (g) {
    sched_emit(a, s, g);
    fifo_order(a, &scratch, s);
  }
  arena_free(&scratch);
  if (!g) {
    sched_errf(err, errlen, "schedule %s cannot be ordered without a deadlock (pp %d, v %d, "
         "microbatches %d)", sched_name(s->kind), s->pp, s->v, s->m);
    return NULL;
  }
  char why[1024];
  if (!sched_verify(s, why, sizeof why)) {
    sched_errf(err, errlen, "schedule %s (pp %d, v %d, microbatches %d) cannot be proven "
         "deadlock-free: %s", sched_name(s->kind), s->pp, s->v, s->m, why);
    return NULL;
  }
  return s;
}


/* ---- the schedule of a partition ------------------------------------------------ */

/* Stage edges (src < dst) from the transfers, and tied groups from the tied params. */
Schedule *sched_partition(Diag *d, Arena *a, const Partition *p, const Costs *cost) {
  const Graph *g = p->g;
  int (*edges)[2] = arena_alloc(a, sizeof(int[2]) * (size_t)(p->nxfers + 1));
  uint8_t *flow = arena_alloc(a, (size_t)p->nxfers + 1);
  int ne = 0;
  for (int i = 0; i < p->nxfers; i++) {
    const PartXfer *x = &p->xfers[i];
    edges[ne][0] = x->grad ? x->dst : x->src;
    edges[ne][1] = x->grad ? x->src : x->dst;
    flow[ne] = x->grad ? SCHED_GRAD : SCHED_ACT; /* merged per stage pair by sched_new */
    ne++;
  }
  TiedGroup *tied = arena_alloc(a, sizeof(TiedGroup) * (size_t)(p->tied.n + 1));
  for (int t = 0; t < p->tied.n; t++) {
    int *st = arena_alloc(a, sizeof(int) * (size_t)p->nstages);
    int n = 0;
    for (int s = 0; s < p->nstages; s++)
      if (ivec_has(&p->st[s].params, p->tied.v[t])) st[n++] = s;
    tied[t] = (TiedGroup){n, st};
  }
  SchedSpec spec = {.kind = g->train.schedule,
                    .pp = g->mesh.pp,
                    .v = g->train.virtual_stages,
                    .m = (int)g->train.microbatches,
                    .nedges = ne,
                    .edges = (const int(*)[2])edges,
                    .flow = flow,
                    .ntied = p->tied.n,
                    .tied = tied,
                    .F = cost->F, .B = cost->B, .W = cost->W};
  char err[512];
  Schedule *s = sched_build(a, &spec, err, sizeof err);
  if (!s)
    diag_error_noloc(d, "schedule %s for pp=%d, %d micro-batch%s: %s", sched_name(spec.kind), spec.pp, spec.m,
                     spec.m == 1 ? "" : "es", err);
  return s;
}
