/*
 * schedule.c — pipeline schedules as per-rank instruction lists, the proof that they
 * cannot deadlock, their timed simulation (bubble prediction) and their dump.
 *
 * How a schedule is made:
 *  1. Each rank gets an order of its forward (F) and input-gradient backward (B)
 *     passes, from the schedule's rule (sched_order_*).
 *  2. A timed list scheduler (gen_run) plays all ranks together with the pass
 *     durations and records, per rank, the sequence of passes it really runs; the
 *     weight-gradient pass W follows its B at once, except under zb, where W waits
 *     in a queue and fills the time a rank would spend waiting. What comes out is one
 *     possible execution, so it respects every data dependency.
 *  3. Messages are put around the passes (sched_emit): recvs right before the pass
 *     that needs them, sends right after the pass that made them, then the tied
 *     all-reduces and the optimizer step. Outside zb the backward is one pass B W:
 *     its gradients are sent after W (as the textbook bubble assumes); under zb they
 *     leave right after B, which is the point of splitting the backward.
 *  4. sched_verify proves the lists with no help from steps 1-3.
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
 *
 * Invariants: see sched.h. No global mutable state; scratch memory lives in a local
 * Arena freed before returning.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

/* ---- names ---------------------------------------------------------------- */

static const char *const ins_names[INS__COUNT] = {
#define X(name, text) text,
    INS_LIST(X)
#undef X
};

const char *ins_name(InsKind k) {
  if ((unsigned)k >= INS__COUNT)
    die("bad instruction kind %d", (int)k);
  return ins_names[k];
}

/* ORDER: follows SchedKind in mplc.h. */
static const char *const sched_names[] = {"sequential", "gpipe", "1f1b", "interleaved", "zb"};

const char *sched_name(SchedKind k) {
  if ((unsigned)k >= sizeof sched_names / sizeof sched_names[0])
    die("bad schedule kind %d", (int)k);
  return sched_names[k];
}

bool sched_parse(const char *s, SchedKind *kind, int *v) {
  *v = 1;
  for (int k = 0; k < (int)(sizeof sched_names / sizeof sched_names[0]); k++) {
    if (strcmp(s, sched_names[k]) == 0) {
      *kind = (SchedKind)k;
      return true;
    }
  }
  int n = 0, len = 0;
  if (sscanf(s, "interleaved(%d)%n", &n, &len) == 1 && len == (int)strlen(s) && n >= 1) {
    *kind = SCHED_INTERLEAVED;
    *v = n;
    return true;
  }
  return false;
}

double sched_textbook_bubble(int p, int m) {
  return (double)(p - 1) / (double)(m + p - 1);
}

/* ---- small helpers -------------------------------------------------------- */

void sched_errf(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Appends to a message already in err. */
static void errcat(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errcat(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0)
    return;
  size_t used = strlen(err);
  if (used + 1 >= errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + used, errlen - used, fmt, ap);
  va_end(ap);
}

static int stage_rank(const Schedule *s, int stage) {
  return stage % s->pp;
}

static double cost_of(const double *c, int stage) {
  return c ? c[stage] : 1.0;
}

/* Index of edge (src, dst) in the sorted edge list, or -1. */
static int edge_index(const Schedule *s, int src, int dst) {
  int lo = 0, hi = s->nedges - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = s->edges[mid][0] != src ? s->edges[mid][0] - src : s->edges[mid][1] - dst;
    if (c == 0)
      return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return -1;
}

static bool tied_has_rank(const Schedule *s, int g, int rank) {
  for (int i = 0; i < s->tied[g].nstages; i++)
    if (stage_rank(s, s->tied[g].stages[i]) == rank)
      return true;
  return false;
}

static int tied_nranks(const Schedule *s, int g) {
  int n = 0;
  for (int r = 0; r < s->pp; r++)
    n += tied_has_rank(s, g, r);
  return n;
}

/* "recv_act(stage 1 <- 0, mb 2)" and the like. */
static char *ins_str(const Ins *in, char *buf, size_t n) {
  const char *name = (unsigned)in->kind < INS__COUNT ? ins_names[in->kind] : "?";
  switch (in->kind) {
  case INS_FWD: case INS_BWD_B: case INS_BWD_W:
    snprintf(buf, n, "%s(stage %d, mb %d)", name, in->stage, in->mb);
    break;
  case INS_SEND_ACT: case INS_SEND_GRAD:
    snprintf(buf, n, "%s(stage %d -> %d, mb %d)", name, in->stage, in->peer_stage, in->mb);
    break;
  case INS_RECV_ACT: case INS_RECV_GRAD:
    snprintf(buf, n, "%s(stage %d <- %d, mb %d)", name, in->stage, in->peer_stage, in->mb);
    break;
  case INS_ALLREDUCE_TIED:
    snprintf(buf, n, "%s(group %d)", name, in->stage);
    break;
  default:
    snprintf(buf, n, "%s", name);
    break;
  }
  return buf;
}

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
      if (stage_rank(s, st) == r)
        il_push(a, l, INS_FWD, st, -1, mb);
    for (int st = s->nstages - 1; st >= 0; st--)
      if (stage_rank(s, st) == r)
        il_push(a, l, INS_BWD_B, st, -1, mb);
  }
}

/* gpipe: every forward in micro-batch order, then every backward in micro-batch order. */
static void order_gpipe(Arena *a, const Schedule *s, int r, InsList *l) {
  for (int mb = 0; mb < s->m; mb++)
    for (int st = 0; st < s->nstages; st++)
      if (stage_rank(s, st) == r)
        il_push(a, l, INS_FWD, st, -1, mb);
  for (int mb = 0; mb < s->m; mb++)
    for (int st = s->nstages - 1; st >= 0; st--)
      if (stage_rank(s, st) == r)
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
  bool defer_w;      /* zb: W waits in a queue */
  int w_limit;       /* most W's a rank may hold back */
  InsList *order;   /* per rank: F and B passes */
  int *pos;          /* per rank: next pass of order */
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
    if (p->kind == INS_FWD && dst == p->stage)
      t = fmax(t, gen_dep_end(g, g->fend, src, p->mb));
    if (p->kind == INS_BWD_B && src == p->stage)
      t = fmax(t, gen_dep_end(g, g->bend, dst, p->mb));
  }
  if (p->kind == INS_BWD_B)
    t = fmax(t, gen_dep_end(g, g->fend, p->stage, p->mb));
  return t;
}

/* What rank r does next, and at what time. */
static int gen_decide(const Gen *g, int r, double *when) {
  int pending = g->wq_tail[r] - g->wq_head[r];
  *when = g->clock[r];
  if (g->pos[r] == g->order[r].n)
    return pending ? ACT_W : ACT_DONE;
  if (g->defer_w && pending >= g->w_limit)
    return ACT_W;
  double ready = gen_ready(g, &g->order[r].p[g->pos[r]]);
  if (ready <= g->clock[r])
    return ACT_NEXT;
  if (pending)
    return ACT_W;
  if (ready == INFINITY)
    return ACT_BLOCKED;
  *when = ready;
  return ACT_NEXT;
}

static void gen_run_w(Arena *a, Gen *g, int r) {
  Ins w = g->wq[r][g->wq_head[r]++];
  g->clock[r] += cost_of(g->W, w.stage);
  il_push(a, &g->out[r], INS_BWD_W, w.stage, -1, w.mb);
}

static void gen_run_next(Arena *a, Gen *g, int r, double when) {
  Ins p = g->order[r].p[g->pos[r]++];
  int k = p.stage * g->s->m + p.mb;
  bool fwd = p.kind == INS_FWD;
  g->clock[r] = when + cost_of(fwd ? g->F : g->B, p.stage);
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
    for (int r = 0; r < s->pp; r++) {
      double t;
      int x = gen_decide(g, r, &t);
      g->stuck[r] = x == ACT_BLOCKED;
      nblocked += x == ACT_BLOCKED;
      if ((x == ACT_NEXT || x == ACT_W) && (best < 0 || t < best_t))
        best = r, best_t = t, act = x;
    }
    if (best < 0)
      return nblocked == 0;
    if (act == ACT_W)
      gen_run_w(a, g, best);
    else
      gen_run_next(a, g, best, best_t);
  }
}

static Gen *gen_new(Arena *a, const Schedule *s, const SchedSpec *spec) {
  Gen *g = arena_alloc(a, sizeof *g);
  int pp = s->pp, n = s->nstages * s->m;
  g->s = s;
  g->F = spec->F, g->B = spec->B, g->W = spec->W;
  g->defer_w = s->kind == SCHED_ZB;
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
  g->fend = arena_alloc(a, sizeof(double) * n);
  g->bend = arena_alloc(a, sizeof(double) * n);
  for (int i = 0; i < n; i++)
    g->fend[i] = g->bend[i] = -1;
  return g;
}

/* Fills g->order for every rank; warmup is used by interleaved only. */
static void gen_orders(Arena *a, Gen *g, const int *warmup) {
  const Schedule *s = g->s;
  for (int r = 0; r < s->pp; r++) {
    InsList *l = &g->order[r];
    switch (s->kind) {
    case SCHED_SEQUENTIAL: order_sequential(a, s, r, l); break;
    case SCHED_GPIPE: order_gpipe(a, s, r, l); break;
    case SCHED_1F1B: case SCHED_ZB: order_1f1b(a, s, r, l); break;
    case SCHED_INTERLEAVED: order_interleaved(a, s, r, warmup[r], l); break;
    }
  }
}

/*
 * Runs the list scheduler; for interleaved, grows the warm-up of stuck ranks until
 * the order can run (at warm-up m*v on every rank it always can).
 */
static Gen *gen_schedule(Arena *a, const Schedule *s, const SchedSpec *spec) {
  int total = s->m * s->v;
  int *warmup = arena_alloc(a, sizeof(int) * s->pp);
  for (int r = 0; r < s->pp; r++) {
    warmup[r] = (s->pp - r - 1) * 2 + (s->v - 1) * interleaved_group(s, 0);
    if (warmup[r] > total)
      warmup[r] = total;
  }
  for (;;) {
    Gen *g = gen_new(a, s, spec);
    gen_orders(a, g, warmup);
    if (gen_run(a, g))
      return g;
    bool grew = false;
    for (int r = 0; r < s->pp; r++)
      if (g->stuck[r] && warmup[r] < total)
        warmup[r]++, grew = true;
    if (!grew || s->kind != SCHED_INTERLEAVED)
      return NULL;
  }
}

/* ---- step 3: messages around the passes ------------------------------------------ */

/* Recvs for the inputs of pass p (before = true) or sends of its outputs. */
static void emit_messages(Arena *a, const Schedule *s, InsList *l, const Ins *p, bool before) {
  for (int e = 0; e < s->nedges; e++) {
    int src = s->edges[e][0], dst = s->edges[e][1];
    if (stage_rank(s, src) == stage_rank(s, dst))
      continue;
    if (p->kind == INS_FWD && before && dst == p->stage)
      il_push(a, l, INS_RECV_ACT, dst, src, p->mb);
    if (p->kind == INS_FWD && !before && src == p->stage)
      il_push(a, l, INS_SEND_ACT, src, dst, p->mb);
    if (p->kind == INS_BWD_B && before && src == p->stage)
      il_push(a, l, INS_RECV_GRAD, src, dst, p->mb);
    if (p->kind == INS_BWD_B && !before && dst == p->stage)
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
      if (tied_has_rank(s, t, r))
        il_push(a, &l, INS_ALLREDUCE_TIED, t, -1, -1);
    il_push(a, &l, INS_OPTIMIZER_STEP, -1, -1, -1);
    s->ins[r] = l.p;
    s->nins[r] = l.n;
  }
}

/* ---- sched_build ------------------------------------------------------------------ */

static int cmp_edge(const void *x, const void *y) {
  const int *a = x, *b = y;
  return a[0] != b[0] ? a[0] - b[0] : a[1] - b[1];
}

static bool spec_check(const SchedSpec *sp, char *err, size_t errlen) {
  if ((unsigned)sp->kind > SCHED_ZB)
    return sched_errf(err, errlen, "unknown schedule kind %d", (int)sp->kind), false;
  if (sp->pp < 1 || sp->pp > SCHED_MAX_PP)
    return sched_errf(err, errlen, "pp must be between 1 and %d, not %d", SCHED_MAX_PP, sp->pp), false;
  if (sp->m < 1)
    return sched_errf(err, errlen, "microbatches must be at least 1, not %d", sp->m), false;
  if (sp->v < 1 || (sp->v != 1 && sp->kind != SCHED_INTERLEAVED))
    return sched_errf(err, errlen, "%d model chunks per rank: only interleaved(v) takes v > 1",
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
  s->edges = arena_alloc(a, sizeof(int[2]) * (sp->nedges + 1));
  if (sp->nedges)
    memcpy(s->edges, sp->edges, sizeof(int[2]) * sp->nedges);
  qsort(s->edges, sp->nedges, sizeof(int[2]), cmp_edge);
  for (int e = 0; e < sp->nedges; e++)
    if (s->nedges == 0 || cmp_edge(s->edges[s->nedges - 1], s->edges[e]) != 0)
      memmove(s->edges[s->nedges++], s->edges[e], sizeof(int[2]));
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
  if (g)
    sched_emit(a, s, g);
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

/* ---- step 4: the proof, which is also the timed simulation ---------------------- */

typedef struct Exec {
  const Schedule *s;
  const double *F, *B, *W;
  double latency;
  int *pc;
  double *clock, *busy;
  double **start;      /* optional, per rank per instruction: start time */
  int *fdone, *bdone, *wdone; /* per (stage, mb): times run */
  int *next_w;         /* per stage: the micro-batch whose W must come next */
  int *nw_rank;        /* per rank: W's run */
  int *sent, *recvd;   /* per message (dir, edge, mb) */
  double *tsent;
  int *arrived;        /* per tied group */
  double *tmax;
  bool *reached, *passed; /* per (rank, group) */
  char *err;
  size_t errlen;
} Exec;

enum { STEP_OK, STEP_BLOCKED, STEP_ERROR };

static int msg_key(const Exec *x, int dir, int edge, int mb) {
  return (dir * x->s->nedges + edge) * x->s->m + mb;
}

static Exec *exec_new(Arena *a, const Schedule *s) {
  Exec *x = arena_alloc(a, sizeof *x);
  int pp = s->pp, n = s->nstages * s->m, nmsg = 2 * s->nedges * s->m + 1;
  int nt = s->ntied + 1;
  x->s = s;
  x->pc = arena_alloc(a, sizeof(int) * pp);
  x->clock = arena_alloc(a, sizeof(double) * pp);
  x->busy = arena_alloc(a, sizeof(double) * pp);
  x->fdone = arena_alloc(a, sizeof(int) * n);
  x->bdone = arena_alloc(a, sizeof(int) * n);
  x->wdone = arena_alloc(a, sizeof(int) * n);
  x->next_w = arena_alloc(a, sizeof(int) * s->nstages);
  x->nw_rank = arena_alloc(a, sizeof(int) * pp);
  x->sent = arena_alloc(a, sizeof(int) * nmsg);
  x->recvd = arena_alloc(a, sizeof(int) * nmsg);
  x->tsent = arena_alloc(a, sizeof(double) * nmsg);
  x->arrived = arena_alloc(a, sizeof(int) * nt);
  x->tmax = arena_alloc(a, sizeof(double) * nt);
  x->reached = arena_alloc(a, sizeof(bool) * pp * nt);
  x->passed = arena_alloc(a, sizeof(bool) * pp * nt);
  return x;
}

static int step_fail(Exec *x, int r, const Ins *in, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int step_fail(Exec *x, int r, const Ins *in, const char *fmt, ...) {
  char b[128], why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  sched_errf(x->err, x->errlen, "rank %d, instruction %d %s: %s", r, x->pc[r],
       ins_str(in, b, sizeof b), why);
  return STEP_ERROR;
}

/* Checks the operands of a pass or message: ranges, rank, edge. Returns the edge or -1. */
static int step_check_operands(Exec *x, int r, const Ins *in, int *edge) {
  const Schedule *s = x->s;
  *edge = -1;
  if (in->stage < 0 || in->stage >= s->nstages || in->mb < 0 || in->mb >= s->m)
    return step_fail(x, r, in, "stage or micro-batch out of range");
  if (stage_rank(s, in->stage) != r)
    return step_fail(x, r, in, "stage %d runs on rank %d", in->stage, stage_rank(s, in->stage));
  if (in->kind <= INS_BWD_W)
    return STEP_OK;
  int p = in->peer_stage;
  if (p < 0 || p >= s->nstages || stage_rank(s, p) == r)
    return step_fail(x, r, in, "the peer stage must be on another rank");
  bool down = in->kind == INS_SEND_ACT || in->kind == INS_RECV_GRAD; /* stage is the src */
  *edge = down ? edge_index(s, in->stage, p) : edge_index(s, p, in->stage);
  if (*edge < 0)
    return step_fail(x, r, in, "no such stage edge");
  return STEP_OK;
}

/* The inputs of FWD(st, mb) or BWD_B(st, mb) are there on rank r. */
static int step_check_inputs(Exec *x, int r, const Ins *in) {
  const Schedule *s = x->s;
  int m = s->m;
  for (int e = 0; e < s->nedges; e++) {
    int src = s->edges[e][0], dst = s->edges[e][1];
    bool fwd = in->kind == INS_FWD;
    if (fwd ? dst != in->stage : src != in->stage)
      continue;
    int other = fwd ? src : dst;
    bool ok = stage_rank(s, other) == r
                  ? (fwd ? x->fdone : x->bdone)[other * m + in->mb] > 0
                  : x->recvd[msg_key(x, fwd ? 0 : 1, e, in->mb)] > 0;
    if (!ok)
      return step_fail(x, r, in, "runs before its %s from stage %d arrived",
                       fwd ? "activation" : "gradient", other);
  }
  if (in->kind == INS_BWD_B && x->fdone[in->stage * m + in->mb] == 0)
    return step_fail(x, r, in, "runs before its forward");
  return STEP_OK;
}

static int step_pass(Exec *x, int r, const Ins *in) {
  int edge, k = in->stage * x->s->m + in->mb;
  if (step_check_operands(x, r, in, &edge) != STEP_OK)
    return STEP_ERROR;
  int *done = in->kind == INS_FWD ? x->fdone : in->kind == INS_BWD_B ? x->bdone : x->wdone;
  if (done[k])
    return step_fail(x, r, in, "runs twice");
  if (in->kind != INS_BWD_W && step_check_inputs(x, r, in) != STEP_OK)
    return STEP_ERROR;
  if (in->kind == INS_BWD_W) {
    if (!x->bdone[k])
      return step_fail(x, r, in, "runs before its bwd_b");
    if (x->next_w[in->stage] != in->mb)
      return step_fail(x, r, in, "weight gradients of stage %d must be summed in micro-batch "
                       "order (mb %d is next)", in->stage, x->next_w[in->stage]);
    x->next_w[in->stage]++;
    x->nw_rank[r]++;
  }
  const double *c = in->kind == INS_FWD ? x->F : in->kind == INS_BWD_B ? x->B : x->W;
  double d = cost_of(c, in->stage);
  done[k] = 1;
  x->clock[r] += d;
  x->busy[r] += d;
  return STEP_OK;
}

static int step_send(Exec *x, int r, const Ins *in) {
  int edge;
  if (step_check_operands(x, r, in, &edge) != STEP_OK)
    return STEP_ERROR;
  bool act = in->kind == INS_SEND_ACT;
  if (!(act ? x->fdone : x->bdone)[in->stage * x->s->m + in->mb])
    return step_fail(x, r, in, "sends before the %s that makes it", act ? "fwd" : "bwd_b");
  int k = msg_key(x, act ? 0 : 1, edge, in->mb);
  if (x->sent[k])
    return step_fail(x, r, in, "sent twice");
  x->sent[k] = 1;
  x->tsent[k] = x->clock[r];
  return STEP_OK;
}

static int step_recv(Exec *x, int r, const Ins *in) {
  int edge;
  if (step_check_operands(x, r, in, &edge) != STEP_OK)
    return STEP_ERROR;
  int k = msg_key(x, in->kind == INS_RECV_ACT ? 0 : 1, edge, in->mb);
  if (x->recvd[k])
    return step_fail(x, r, in, "received twice");
  if (!x->sent[k])
    return STEP_BLOCKED;
  x->recvd[k] = 1;
  x->clock[r] = fmax(x->clock[r], x->tsent[k] + x->latency);
  return STEP_OK;
}

/* All of rank r's W passes have run. */
static bool rank_backward_done(const Exec *x, int r) {
  int local = 0;
  for (int st = r; st < x->s->nstages; st += x->s->pp)
    local++;
  return x->nw_rank[r] == local * x->s->m;
}

static int step_allreduce(Exec *x, int r, const Ins *in) {
  const Schedule *s = x->s;
  int g = in->stage;
  if (g < 0 || g >= s->ntied || !tied_has_rank(s, g, r))
    return step_fail(x, r, in, "rank %d holds no stage of this tied group", r);
  if (x->passed[r * (s->ntied + 1) + g])
    return step_fail(x, r, in, "all-reduces twice");
  if (!rank_backward_done(x, r))
    return step_fail(x, r, in, "comes before the end of the rank's backward work");
  bool *reached = &x->reached[r * (s->ntied + 1) + g];
  if (!*reached) {
    *reached = true;
    x->arrived[g]++;
    x->tmax[g] = fmax(x->tmax[g], x->clock[r]);
  }
  if (x->arrived[g] < tied_nranks(s, g))
    return STEP_BLOCKED;
  x->passed[r * (s->ntied + 1) + g] = true;
  x->clock[r] = x->tmax[g] + (tied_nranks(s, g) > 1 ? x->latency : 0);
  return STEP_OK;
}

static int step_optimizer(Exec *x, int r, const Ins *in) {
  if (x->pc[r] != x->s->nins[r] - 1)
    return step_fail(x, r, in, "must be the rank's last instruction");
  if (!rank_backward_done(x, r))
    return step_fail(x, r, in, "comes before the end of the rank's backward work");
  for (int g = 0; g < x->s->ntied; g++)
    if (tied_has_rank(x->s, g, r) && !x->passed[r * (x->s->ntied + 1) + g])
      return step_fail(x, r, in, "comes before allreduce_tied(group %d)", g);
  return STEP_OK;
}

static int exec_step(Exec *x, int r) {
  const Ins *in = &x->s->ins[r][x->pc[r]];
  if (x->start)
    x->start[r][x->pc[r]] = x->clock[r];
  switch (in->kind) {
  case INS_FWD: case INS_BWD_B: case INS_BWD_W: return step_pass(x, r, in);
  case INS_SEND_ACT: case INS_SEND_GRAD: return step_send(x, r, in);
  case INS_RECV_ACT: case INS_RECV_GRAD: return step_recv(x, r, in);
  case INS_ALLREDUCE_TIED: return step_allreduce(x, r, in);
  case INS_OPTIMIZER_STEP: return step_optimizer(x, r, in);
  }
  return step_fail(x, r, in, "unknown instruction kind %d", in->kind);
}

/* True if some rank's list holds the send that matches recv `in`. */
static bool recv_has_sender(const Schedule *s, const Ins *in) {
  int want = in->kind == INS_RECV_ACT ? INS_SEND_ACT : INS_SEND_GRAD;
  int pr = stage_rank(s, in->peer_stage);
  for (int i = 0; i < s->nins[pr]; i++) {
    const Ins *o = &s->ins[pr][i];
    if (o->kind == want && o->stage == in->peer_stage && o->peer_stage == in->stage &&
        o->mb == in->mb)
      return true;
  }
  return false;
}

static bool exec_report_deadlock(Exec *x) {
  const Schedule *s = x->s;
  char b[128];
  sched_errf(x->err, x->errlen, "deadlock:");
  for (int r = 0; r < s->pp; r++) {
    if (x->pc[r] == s->nins[r])
      continue;
    const Ins *in = &s->ins[r][x->pc[r]];
    errcat(x->err, x->errlen, " rank %d waits at instruction %d %s%s;", r, x->pc[r],
           ins_str(in, b, sizeof b),
           (in->kind == INS_RECV_ACT || in->kind == INS_RECV_GRAD) && !recv_has_sender(s, in)
               ? " (no rank sends it)" : "");
  }
  return false;
}

/* After every rank finished: every pass ran, every send was received, every rank stepped. */
static bool exec_check_complete(Exec *x) {
  const Schedule *s = x->s;
  static const char *const what[] = {"fwd", "bwd_b", "bwd_w"};
  for (int st = 0; st < s->nstages; st++) {
    for (int mb = 0; mb < s->m; mb++) {
      const int *done[] = {x->fdone, x->bdone, x->wdone};
      for (int i = 0; i < 3; i++)
        if (!done[i][st * s->m + mb])
          return sched_errf(x->err, x->errlen, "%s(stage %d, mb %d) never runs (rank %d)",
                      what[i], st, mb, stage_rank(s, st)), false;
    }
  }
  for (int dir = 0; dir < 2; dir++)
    for (int e = 0; e < s->nedges; e++)
      for (int mb = 0; mb < s->m; mb++) {
        int k = msg_key(x, dir, e, mb);
        int a = s->edges[e][dir], b = s->edges[e][1 - dir];
        if (x->sent[k] && !x->recvd[k])
          return sched_errf(x->err, x->errlen, "rank %d: %s(stage %d -> %d, mb %d) is never received",
                      stage_rank(s, a), dir ? "send_grad" : "send_act", a, b, mb), false;
      }
  for (int r = 0; r < s->pp; r++)
    if (s->nins[r] == 0 || s->ins[r][s->nins[r] - 1].kind != INS_OPTIMIZER_STEP)
      return sched_errf(x->err, x->errlen, "rank %d does not end with optimizer_step", r), false;
  return true;
}

/*
 * Runs every rank as far as it can, over and over, until all finish or none can
 * move. Sends never block, so the order in which ranks are tried changes neither
 * the outcome nor the times.
 */
static bool exec_run(Exec *x) {
  const Schedule *s = x->s;
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < s->pp; r++) {
      while (x->pc[r] < s->nins[r]) {
        int st = exec_step(x, r);
        if (st == STEP_ERROR)
          return false;
        if (st == STEP_BLOCKED)
          break;
        x->pc[r]++;
        progress = true;
      }
    }
  }
  for (int r = 0; r < s->pp; r++)
    if (x->pc[r] < s->nins[r])
      return exec_report_deadlock(x);
  return exec_check_complete(x);
}

bool sched_verify(const Schedule *s, char *err, size_t errlen) {
  Arena scratch;
  arena_init(&scratch);
  Exec *x = exec_new(&scratch, s);
  char dummy[8];
  x->err = err ? err : dummy;
  x->errlen = err ? errlen : sizeof dummy;
  bool ok = exec_run(x);
  arena_free(&scratch);
  return ok;
}

/* Runs a proven schedule with times; start (optional) gets each instruction's start. */
static void exec_timed(const Schedule *s, const double *F, const double *B, const double *W,
                       double latency, SchedTiming *out, double **start) {
  if (s->pp > SCHED_MAX_PP)
    die("pp %d over SCHED_MAX_PP", s->pp);
  Arena scratch;
  arena_init(&scratch);
  Exec *x = exec_new(&scratch, s);
  char err[1024];
  x->F = F, x->B = B, x->W = W, x->latency = latency;
  x->err = err, x->errlen = sizeof err;
  x->start = start;
  if (!exec_run(x))
    die("simulating an unproven schedule: %s", err);
  memset(out, 0, sizeof *out);
  out->pp = s->pp;
  double sum = 0;
  for (int r = 0; r < s->pp; r++) {
    out->busy[r] = x->busy[r];
    out->makespan = fmax(out->makespan, x->clock[r]);
    sum += x->busy[r];
  }
  out->bubble = out->makespan > 0 ? 1 - sum / (s->pp * out->makespan) : 0;
  arena_free(&scratch);
}

void sched_simulate(const Schedule *s, const double *F, const double *B, const double *W,
                    double latency, SchedTiming *out) {
  exec_timed(s, F, B, W, latency, out, NULL);
}

int sched_peak_inflight(const Schedule *s, int rank) {
  int n = 0, peak = 0;
  for (int i = 0; i < s->nins[rank]; i++) {
    if (s->ins[rank][i].kind == INS_FWD && ++n > peak)
      peak = n;
    if (s->ins[rank][i].kind == INS_BWD_W)
      n--;
  }
  return peak;
}

/* ---- --emit=schedule ------------------------------------------------------------ */

static void dump_header(FILE *out, const Schedule *s, const SchedTiming *t) {
  fprintf(out, "schedule %s pp=%d v=%d microbatches=%d stages=%d\n", sched_name(s->kind), s->pp,
          s->v, s->m, s->nstages);
  fprintf(out, "edges:");
  for (int e = 0; e < s->nedges; e++)
    fprintf(out, " %d->%d", s->edges[e][0], s->edges[e][1]);
  fprintf(out, "%s\ntied:", s->nedges ? "" : " none");
  for (int g = 0; g < s->ntied; g++) {
    fprintf(out, " {");
    for (int i = 0; i < s->tied[g].nstages; i++)
      fprintf(out, "%s%d", i ? "," : "", s->tied[g].stages[i]);
    fprintf(out, "}");
  }
  fprintf(out, "%s\n", s->ntied ? "" : " none");
  fprintf(out, "unit passes: makespan %.0f slots, bubble %.4f (textbook (p-1)/(m+p-1) %.4f)\n",
          t->makespan, t->bubble, sched_textbook_bubble(s->pp, s->m));
}

/* The pass of rank r that starts in slot t, as "F s0 m3", or ".". */
static void dump_cell(const Schedule *s, double *const *start, int r, int t, char *buf, size_t n) {
  snprintf(buf, n, ".");
  for (int i = 0; i < s->nins[r]; i++) {
    const Ins *in = &s->ins[r][i];
    if (in->kind > INS_BWD_W || (int)lround(start[r][i]) != t)
      continue;
    snprintf(buf, n, "%c s%d m%d", "FBW"[in->kind], in->stage, in->mb);
    return;
  }
}

void sched_dump(FILE *out, const Schedule *s) {
  Arena scratch;
  arena_init(&scratch);
  double **start = arena_alloc(&scratch, sizeof(double *) * s->pp);
  for (int r = 0; r < s->pp; r++)
    start[r] = arena_alloc(&scratch, sizeof(double) * (s->nins[r] + 1));
  SchedTiming *t = arena_alloc(&scratch, sizeof *t);
  exec_timed(s, NULL, NULL, NULL, 0, t, start);
  dump_header(out, s, t);
  char cell[64];
  for (int slot = -1; slot < (int)lround(t->makespan); slot++) {
    char row[16 * SCHED_MAX_PP + 16];
    int len = snprintf(row, sizeof row, slot < 0 ? "slot " : "%4d ", slot);
    for (int r = 0; r < s->pp; r++) {
      if (slot < 0)
        snprintf(cell, sizeof cell, "rank %d", r);
      else
        dump_cell(s, start, r, slot, cell, sizeof cell);
      len += snprintf(row + len, sizeof row - len, " %-11s", cell);
    }
    while (len > 0 && row[len - 1] == ' ')
      row[--len] = 0;
    fprintf(out, "%s\n", row);
  }
  for (int r = 0; r < s->pp; r++) {
    fprintf(out, "rank %d: %d instructions\n", r, s->nins[r]);
    for (int i = 0; i < s->nins[r]; i++)
      fprintf(out, "  %4d  %s\n", i, ins_str(&s->ins[r][i], cell, sizeof cell));
  }
  arena_free(&scratch);
}

/* ---- the schedule of a partition ------------------------------------------------ */

/* Stage edges (src < dst) from the transfers, and tied groups from the tied params. */
Schedule *sched_partition(Diag *d, Arena *a, const Partition *p, const Costs *cost) {
  const Graph *g = p->g;
  int (*edges)[2] = arena_alloc(a, sizeof(int[2]) * (size_t)(p->nxfers + 1));
  int ne = 0;
  for (int i = 0; i < p->nxfers; i++) {
    const PartXfer *x = &p->xfers[i];
    edges[ne][0] = x->grad ? x->dst : x->src;
    edges[ne][1] = x->grad ? x->src : x->dst;
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
                    .v = g->train.schedule == SCHED_INTERLEAVED ? g->train.virtual_stages : 1,
                    .m = (int)g->train.microbatches,
                    .nedges = ne,
                    .edges = (const int(*)[2])edges,
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
