/*
 * plan.c — liveness over a rank's whole instruction stream and offset assignment,
 * and every world rank's optimizer state and communication per step (see plan.h).
 */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

enum { ALIGN = 64 };

typedef struct Interval {
  int value, mb;      /* mb = -1: persistent (one buffer for every micro-batch) */
  int64_t start, end; /* inclusive times */
  uint64_t size, offset;
} Interval;

typedef struct Live {
  int m;
  int64_t *start, *end; /* [nvalues * m], -1: untouched */
  bool *persistent;     /* [nvalues] */
  const int *alias_of;
  int64_t t;
} Live;

static int root_of(const Live *lv, int v) {
  for (int guard = 0; lv->alias_of && lv->alias_of[v] >= 0 && guard < 64; guard++) v = lv->alias_of[v];
  return v;
}

static void touch(Live *lv, int v, int mb) {
  v = root_of(lv, v);
  if (lv->persistent[v]) mb = 0;
  size_t k = (size_t)v * lv->m + mb;
  if (lv->start[k] < 0) lv->start[k] = lv->t;
  lv->end[k] = lv->t;
}

static void run_prog(Live *lv, const PlanProg *pg, int mb) {
  for (int i = 0; i < pg->nsteps; i++, lv->t++)
    for (int j = 0; j < pg->steps[i].n; j++) touch(lv, pg->steps[i].vals[j], mb);
}

const PartXfer *plan_xfer_of(const Partition *p, const Ins *ins) {
  bool send = ins->kind == INS_SEND_ACT || ins->kind == INS_SEND_GRAD;
  bool grad = ins->kind == INS_SEND_GRAD || ins->kind == INS_RECV_GRAD;
  if (!send && !grad && ins->kind != INS_RECV_ACT) return NULL;
  int src = send ? ins->stage : ins->peer_stage, dst = send ? ins->peer_stage : ins->stage;
  for (int i = 0; i < p->nxfers; i++)
    if (p->xfers[i].src == src && p->xfers[i].dst == dst && p->xfers[i].grad == grad) return &p->xfers[i];
  return NULL;
}

static void run_xfer(Live *lv, const PartXfer *x, int mb) {
  if (!x) return;
  for (int j = 0; j < x->vals.n; j++) touch(lv, x->vals.v[j], mb);
  lv->t++;
}

/* Walks rank r's instruction list, extending the live range of each (value, mb). */
static void walk_rank(Live *lv, const PlanIn *in, int r) {
  const Schedule *s = in->sched;
  for (int i = 0; i < s->nins[r]; i++) {
    const Ins *ins = &s->ins[r][i];
    switch (ins->kind) {
    case INS_FWD: run_prog(lv, &in->progs[ins->stage][PASS_FWD], ins->mb); break;
    case INS_BWD_B:
      run_prog(lv, &in->progs[ins->stage][PASS_RECOMP], ins->mb);
      run_prog(lv, &in->progs[ins->stage][PASS_BWD_B], ins->mb);
      break;
    case INS_BWD_W: run_prog(lv, &in->progs[ins->stage][PASS_BWD_W], ins->mb); break;
    case INS_SEND_ACT:
    case INS_RECV_ACT:
    case INS_SEND_GRAD:
    case INS_RECV_GRAD: run_xfer(lv, plan_xfer_of(in->part, ins), ins->mb); break;
    default: lv->t++; break;
    }
  }
}

static int cmp_interval(const void *a, const void *b) {
  const Interval *x = a, *y = b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  if (x->start != y->start) return x->start < y->start ? -1 : 1;
  return x->value != y->value ? x->value - y->value : x->mb - y->mb;
}

static int cmp_by_offset(const void *a, const void *b) {
  const Interval *x = *(Interval *const *)a, *y = *(Interval *const *)b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Largest first, each at the lowest offset free during its whole lifetime. */
static uint64_t assign_offsets(Interval *iv, int n) {
  qsort(iv, (size_t)n, sizeof *iv, cmp_interval);
  Interval **busy = malloc(sizeof(Interval *) * (size_t)(n ? n : 1));
  uint64_t peak = 0;
  for (int i = 0; i < n; i++) {
    int nb = 0;
    for (int j = 0; j < i; j++)
      if (iv[j].start <= iv[i].end && iv[i].start <= iv[j].end) busy[nb++] = &iv[j];
    qsort(busy, (size_t)nb, sizeof *busy, cmp_by_offset);
    uint64_t off = 0;
    for (int j = 0; j < nb; j++) {
      if (busy[j]->offset >= off + iv[i].size) break;
      uint64_t e = busy[j]->offset + busy[j]->size;
      if (e > off) off = e;
    }
    iv[i].offset = off;
    if (off + iv[i].size > peak) peak = off + iv[i].size;
  }
  free(busy);
  return peak;
}

static uint64_t aligned_bytes(const Op *op) {
  uint64_t b = op_bytes(op);
  return (b + ALIGN - 1) / ALIGN * ALIGN;
}

static bool is_persistent(const Op *op) { return op->kind == OP_PARAM || op->kind == OP_PARAM_GRAD; }

/* Persistent values (params, accumulators) and the step's inputs, for rank r. */
static void touch_leaves(Live *lv, const PlanIn *in, int r) {
  const Schedule *s = in->sched;
  for (int st = 0; st < s->nstages; st++) {
    if (st % s->pp != r) continue;
    const PartStage *ps = &in->part->st[st];
    for (int i = 0; i < ps->params.n; i++) touch(lv, ps->params.v[i], 0);
    for (int i = 0; i < ps->inputs.n; i++)
      for (int mb = 0; mb < lv->m; mb++) touch(lv, ps->inputs.v[i], mb);
  }
}

typedef struct PeakEvent {
  int64_t t;
  int64_t act, stash; /* bytes that become live (> 0) or die (< 0) at t */
} PeakEvent;

static int cmp_event(const void *a, const void *b) {
  const PeakEvent *x = a, *y = b;
  return x->t < y->t ? -1 : x->t > y->t;
}

/* The peaks of activation bytes live at once over times [0, tend), and of those held
 * across instructions (stash): a sweep over the buffers' starts and ends in time order. */
static void peaks(PlanRank *pr, const Graph *g, const Live *lv, const Interval *iv, int n, int64_t tend) {
  PeakEvent *ev = malloc(sizeof(PeakEvent) * (size_t)(2 * n + 1));
  int ne = 0;
  for (int i = 0; i < n; i++) {
    const Op *op = g->ops[iv[i].value];
    if (lv->persistent[iv[i].value] || op->kind == OP_INPUT) continue;
    int64_t sz = (int64_t)iv[i].size, st = op->stash ? sz : 0;
    ev[ne++] = (PeakEvent){iv[i].start, sz, st};
    ev[ne++] = (PeakEvent){iv[i].end + 1, -sz, -st};
  }
  qsort(ev, (size_t)ne, sizeof *ev, cmp_event);
  int64_t act = 0, stash = 0;
  for (int i = 0; i < ne;) {
    int64_t t = ev[i].t;
    for (; i < ne && ev[i].t == t; i++) act += ev[i].act, stash += ev[i].stash;
    if (t < 0 || t >= tend) continue;
    if ((uint64_t)act > pr->act_peak) pr->act_peak = (uint64_t)act;
    if ((uint64_t)stash > pr->stash_peak) pr->stash_peak = (uint64_t)stash;
  }
  free(ev);
}

static PlanRank plan_rank(Arena *a, const PlanIn *in, int r) {
  const Graph *g = in->g;
  int m = in->sched->m, nv = g->nops;
  Live lv = {.m = m, .alias_of = in->alias_of};
  size_t nk = (size_t)nv * m;
  lv.start = malloc(sizeof(int64_t) * nk);
  lv.end = malloc(sizeof(int64_t) * nk);
  lv.persistent = calloc((size_t)nv, 1);
  for (size_t k = 0; k < nk; k++) lv.start[k] = lv.end[k] = -1;
  for (int v = 0; v < nv; v++) lv.persistent[v] = is_persistent(g->ops[v]);
  touch_leaves(&lv, in, r);
  walk_rank(&lv, in, r);
  int64_t tend = lv.t;
  PlanRank pr = {0};
  Interval *iv = malloc(sizeof(Interval) * (nk ? nk : 1));
  int n = 0;
  for (int v = 0; v < nv; v++) {
    const Op *op = g->ops[v];
    for (int mb = 0; mb < m; mb++) {
      size_t k = (size_t)v * m + mb;
      if (lv.start[k] < 0) continue;
      Interval *x = &iv[n++];
      *x = (Interval){.value = v, .mb = mb, .start = lv.start[k], .end = lv.end[k], .size = aligned_bytes(op)};
      if (lv.persistent[v] || op->kind == OP_INPUT || v == g->loss) x->start = 0, x->end = tend + 1; /* the loss is read after its FWD */
      if (op->kind == OP_PARAM) pr.param_bytes += x->size;
      else if (op->kind == OP_PARAM_GRAD) pr.grad_bytes += x->size;
      else if (op->kind == OP_INPUT) pr.input_bytes += x->size;
    }
  }
  pr.arena_bytes = assign_offsets(iv, n);
  pr.offset = arena_alloc(a, sizeof(uint64_t) * (nk ? nk : 1));
  for (size_t k = 0; k < nk; k++) pr.offset[k] = UINT64_MAX;
  for (int i = 0; i < n; i++) {
    if (lv.persistent[iv[i].value])
      for (int mb = 0; mb < m; mb++) pr.offset[(size_t)iv[i].value * m + mb] = iv[i].offset;
    else
      pr.offset[(size_t)iv[i].value * m + iv[i].mb] = iv[i].offset;
  }
  /* aliases share their root's offset */
  for (int v = 0; in->alias_of && v < nv; v++) {
    int root = root_of(&lv, v);
    if (root != v)
      for (int mb = 0; mb < m; mb++) pr.offset[(size_t)v * m + mb] = pr.offset[(size_t)root * m + mb];
  }
  peaks(&pr, g, &lv, iv, n, tend);
  free(iv);
  free(lv.start);
  free(lv.end);
  free(lv.persistent);
  return pr;
}

PlanRank *plan_build(Arena *a, const PlanIn *in) {
  int pp = in->sched->pp;
  PlanRank *pr = arena_alloc(a, sizeof(PlanRank) * (size_t)pp);
  for (int r = 0; r < pp; r++) pr[r] = plan_rank(a, in, r);
  return pr;
}

/* ---- the mesh: every world rank's optimizer state and communication ------------------- */

typedef struct Mesh3 {
  const PlanIn *in;
  const PlanRank *pr;
  int dp, tp, pp, m;
} Mesh3;

static void count(MplCommCount *c, int kind, uint64_t bytes) {
  if (kind < 0) return;
  c[kind].calls++;
  c[kind].bytes += bytes;
}

/* Does pipeline rank r hold param pi (a buffer for it in its arena)? The runtime asks the same of the job. */
static void comm_prog(const PlanProg *pg, MplCommCount *c) {
  for (int i = 0; i < pg->nsteps; i++) count(c, pg->steps[i].comm, pg->steps[i].comm_bytes);
}

/* A transfer's values, one message each, unless both stages are on this rank. */
static void comm_xfer(const Mesh3 *ms, const PartXfer *x, int peer_stage, int r, int kind, MplCommCount *c) {
  if (!x || peer_stage % ms->pp == r) return;
  for (int j = 0; j < x->vals.n; j++) count(c, kind, op_bytes(ms->in->g->ops[x->vals.v[j]]));
}

/* The stream of pipeline rank r as the runtime runs it: the schedule's passes and
 * messages, and at OPTIMIZER_STEP the rank's update phase. */
static void comm_stream(const Mesh3 *ms, int r, MplCommCount *c) {
  const PlanIn *in = ms->in;
  const Schedule *s = in->sched;
  for (int i = 0; i < s->nins[r]; i++) {
    const Ins *ins = &s->ins[r][i];
    switch (ins->kind) {
    case INS_FWD: comm_prog(&in->progs[ins->stage][PASS_FWD], c); break;
    case INS_BWD_B:
      comm_prog(&in->progs[ins->stage][PASS_RECOMP], c);
      comm_prog(&in->progs[ins->stage][PASS_BWD_B], c);
      break;
    case INS_BWD_W: comm_prog(&in->progs[ins->stage][PASS_BWD_W], c); break;
    case INS_SEND_ACT:
    case INS_SEND_GRAD: comm_xfer(ms, plan_xfer_of(in->part, ins), ins->peer_stage, r, MPL_COMM_PP_SEND, c); break;
    case INS_RECV_ACT:
    case INS_RECV_GRAD: comm_xfer(ms, plan_xfer_of(in->part, ins), ins->peer_stage, r, MPL_COMM_PP_RECV, c); break;
    case INS_OPTIMIZER_STEP:
      for (int k = 0; k < in->upd->n[r]; k++) upd_comm(in->upd, r, &in->upd->ins[r][k], c);
      break;
    default: break;
    }
  }
}

/* Optimizer slots of the ranges the rank's UPDATE instructions keep state for. */
static uint64_t opt_bytes(const Mesh3 *ms, const PlanWorld *pw) {
  const TrainConfig *t = &ms->in->g->train;
  const UpdatePhase *u = ms->in->upd;
  int nslots = t->optimizer == OPT_ADAMW ? 2 : t->momentum != 0 ? 1 : 0;
  uint64_t b = 0;
  for (int k = 0; k < u->n[pw->pr]; k++) {
    const JobIns *in = &u->ins[pw->pr][k];
    uint64_t bytes = (uint64_t)upd_state_elems(u, in, pw->dpi) * (uint64_t)dtype_size(ms->in->params[in->param >= 0 ? in->param : 0]->dtype);
    b += (bytes + ALIGN - 1) / ALIGN * ALIGN;
  }
  return b * (uint64_t)nslots;
}

PlanWorld *plan_world(Arena *a, const PlanIn *in, const PlanRank *pr) {
  const Graph *g = in->g;
  Mesh3 ms = {.in = in, .pr = pr, .dp = g->mesh.dp > 0 ? g->mesh.dp : 1, .tp = g->mesh.tp > 0 ? g->mesh.tp : 1,
              .pp = in->sched->pp, .m = in->sched->m};
  int nworld = ms.dp * ms.tp * ms.pp;
  PlanWorld *pw = arena_alloc(a, sizeof(PlanWorld) * (size_t)nworld);
  for (int w = 0; w < nworld; w++) {
    PlanWorld *x = &pw[w];
    *x = (PlanWorld){.w = w, .pr = w % ms.pp, .tpi = w / ms.pp % ms.tp, .dpi = w / (ms.pp * ms.tp)};
    comm_stream(&ms, x->pr, x->comm);
    x->opt_bytes = opt_bytes(&ms, x);
  }
  return pw;
}
