/*
 * plan.c — the memory plan pass: its input from the programs (plan_input), liveness
 * over a rank's whole instruction stream and offset assignment (plan_build), the
 * --mem-limit check, every world rank's optimizer state and communication per step
 * (plan_world), and --emit=plan (plan_dump). See plan.h for the invariants.
 */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

enum { ALIGN = 64 };

typedef PlanInterval Interval;

typedef struct Live {
  int m;
  int64_t *start, *end; /* [nvalues * m], -1: untouched */
  bool *persistent;     /* [nvalues] */
  const int *alias_of;
  int64_t t;
} Live;

/* The value whose buffer v shares: the end of its alias chain, however long (an alias's
 * input is an earlier op, so the ids fall and the chain ends; a cap of 64 steps gave a
 * longer chain's middle as its root, a buffer that is not planned). */
static int root_of(const Live *lv, int v) {
  while (lv->alias_of && lv->alias_of[v] >= 0) v = lv->alias_of[v];
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

/* ---- the input: each step's values ------------------------------------------------------ */

uint8_t plan_comm_code(OpKind k) {
  switch (k) {
  case OP_ALLREDUCE: return JC_ALLREDUCE;
  case OP_ALLGATHER: return JC_ALLGATHER;
  case OP_TP_ENTER: return JC_TP_ENTER;
  case OP_TP_SLICE: return JC_TP_SLICE;
  case OP_REDUCE_SCATTER: return JC_REDUCE_SCATTER;
  default: die("plan: %s is not a collective the runtime runs", op_name(k));
  }
}

/* The steps' values for the memory plan, and the collectives that communicate with
 * their payload (the larger of output and input: the whole tensor) for the mesh plan. */
static void to_plan_prog(Arena *a, const Graph *g, const Program *pg, PlanProg *out) {
  out->nsteps = pg->nsteps;
  out->steps = arena_alloc(a, sizeof(PlanStep) * (size_t)(pg->nsteps + 1));
  for (int i = 0; i < pg->nsteps; i++) {
    const Step *st = &pg->steps[i];
    int n;
    int *v = step_values(a, g, st, &n);
    out->steps[i] = (PlanStep){n, v, -1, 0};
    if (st->kind != STEP_COMM) continue;
    const Op *op = g->ops[st->op], *in = g->ops[op->in[0]];
    out->steps[i].comm = mpl_comm_kind_of_jc(plan_comm_code(op->kind));
    out->steps[i].comm_bytes = op_bytes(op) > op_bytes(in) ? op_bytes(op) : op_bytes(in);
  }
}

PlanIn plan_input(Arena *a, const Partition *p, const Fused *fu, const Schedule *s, const UpdatePhase *u) {
  const Graph *g = p->g;
  PlanIn in = {.g = g, .part = p, .sched = s, .params = u->params, .nparams = u->nparams, .upd = u};
  in.progs = arena_alloc(a, sizeof(PlanProg[PASS__COUNT]) * (size_t)p->nstages);
  int *alias_of = arena_alloc(a, sizeof(int) * (size_t)g->nops);
  for (int i = 0; i < g->nops; i++) alias_of[i] = -1;
  for (int st = 0; st < p->nstages; st++)
    for (int k = 0; k < PASS__COUNT; k++) {
      const Program *pg = fu->progs[st][k];
      to_plan_prog(a, g, pg, &in.progs[st][k]);
      for (int i = 0; i < pg->nsteps; i++)
        if (pg->steps[i].kind == STEP_ALIAS) alias_of[pg->steps[i].a] = pg->steps[i].b;
    }
  in.alias_of = alias_of;
  return in;
}

/* ---- liveness and offsets ---------------------------------------------------------------- */

/* Walks rank r's instruction list, extending the live range of each (value, mb). */
static void walk_rank(Live *lv, const PlanIn *in, int r) {
  const Schedule *s = in->sched;
  for (int i = 0; i < s->nins[r]; i++) {
    const Ins *ins = &s->ins[r][i];
    switch (ins->kind) {
    case INS_FWD: run_prog(lv, &in->progs[ins->stage][PASS_FWD], ins->mb); break;
    case INS_BWD_B: run_prog(lv, &in->progs[ins->stage][PASS_BWD_B], ins->mb); break;
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

/* The union of placed buffers' [offset, offset + size): sorted, disjoint ranges (ranges
 * that touch are one). */
typedef struct Ranges {
  uint64_t (*r)[2];
  int n, cap;
  Arena *a; /* where a bigger array comes from (a tree's many small unions: no malloc each), or NULL */
} Ranges;

static void ranges_add(Ranges *u, uint64_t lo, uint64_t hi) {
  if (hi <= lo) return;
  int i = 0, j, a = 0, b = u->n;
  while (a < b) { /* i: the first range that ends at or after lo */
    int mid = (a + b) / 2;
    if (u->r[mid][1] < lo) a = mid + 1;
    else b = mid;
  }
  i = a;
  for (j = i; j < u->n && u->r[j][0] <= hi; j++) { /* the ranges it meets or touches: one */
    if (u->r[j][0] < lo) lo = u->r[j][0];
    if (u->r[j][1] > hi) hi = u->r[j][1];
  }
  if (j == i) { /* none: a new range at i */
    if (u->n == u->cap) {
      u->cap = u->cap ? 2 * u->cap : 2; /* (most of a tree's unions hold a range or two) */
      if (u->a) { /* (the old array stays in the arena: at most as much again) */
        uint64_t(*r)[2] = arena_alloc(u->a, sizeof *u->r * (size_t)u->cap);
        if (u->n) memcpy(r, u->r, sizeof *u->r * (size_t)u->n);
        u->r = r;
      } else {
        u->r = realloc(u->r, sizeof *u->r * (size_t)u->cap);
      }
      if (!u->r) die("out of memory");
    }
    memmove(&u->r[i + 1], &u->r[i], sizeof *u->r * (size_t)(u->n - i));
    u->n++, j = i + 1;
  }
  u->r[i][0] = lo, u->r[i][1] = hi;
  memmove(&u->r[i + 1], &u->r[j], sizeof *u->r * (size_t)(u->n - j));
  u->n -= j - i - 1;
}

/* The first gap of size bytes in u. */
static uint64_t ranges_fit(const Ranges *u, uint64_t size) {
  uint64_t off = 0;
  for (int i = 0; i < u->n && u->r[i][0] < off + size; i++)
    if (u->r[i][1] > off) off = u->r[i][1];
  return off;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* The lowest offset at which size bytes fit among the ranges of rg[0 .. k) (each sorted,
 * one buffer maybe in several): the streams merged in offset order (a binary heap of their
 * heads, heap[] of k, at[] each one's next), walked up from offset 0 to the first gap. */
static uint64_t first_fit(uint64_t size, const Ranges *const *rg, int k, int *at, int *heap) {
  int nh = 0;
#define HEAD(c) (rg[heap[c]]->r[at[heap[c]]][0])
  for (int i = 0; i < k; i++) {
    if (!rg[i]->n) continue;
    at[i] = 0;
    int c = nh++; /* sift up */
    heap[c] = i;
    while (c > 0 && HEAD(c) < HEAD((c - 1) / 2)) {
      int p = (c - 1) / 2, t = heap[p];
      heap[p] = heap[c], heap[c] = t, c = p;
    }
  }
  uint64_t off = 0;
  while (nh > 0) {
    int top = heap[0], j = at[top]++;
    uint64_t lo = rg[top]->r[j][0], hi = rg[top]->r[j][1];
    if (lo >= off + size) break;
    if (hi > off) off = hi;
    if (at[top] == rg[top]->n) heap[0] = heap[--nh]; /* that stream is done */
    for (int c = 0;;) { /* sift down */
      int m = c, lc = 2 * c + 1, rc = lc + 1;
      if (lc < nh && HEAD(lc) < HEAD(m)) m = lc;
      if (rc < nh && HEAD(rc) < HEAD(m)) m = rc;
      if (m == c) break;
      int t = heap[m];
      heap[m] = heap[c], heap[c] = t, c = m;
    }
  }
#undef HEAD
  return off;
}

/* Largest first, each at the lowest offset free during its whole lifetime: the first gap in
 * the union of the bytes of the placed buffers whose lifetimes meet its own. Placed buffer y
 * meets x when y starts at or before x's start and is live there (it contains the point
 * x.start), or starts within (x.start, x.end]. Two trees over the buffers' start times (a
 * leaf per distinct start) keep those unions: `cover` holds y's bytes in the nodes that
 * cover its lifetime's leaves (a segment tree: the nodes on the path from x.start's leaf to
 * the root hold exactly the buffers live at x.start), `begin` in every node on the path from
 * its start's leaf (the nodes that cover x's leaves from x.start to x.end hold exactly those
 * starting there). So x's fit is a walk of O(log n) unions of byte ranges, not of the
 * buffers one by one: under gpipe every micro-batch's stash meets every other's, and
 * walking them one at a time made planning quadratic (a 4-stage small GPT: 1,024
 * micro-batches 10.5 s, 4,096 131 s). The same offsets as that walk (a union's gaps are the
 * gaps between its buffers). */
typedef struct Tree {
  int leaves;         /* a power of two: node 1 the root, leaves at [leaves, 2 leaves) */
  Ranges *cover, *begin;
} Tree;

/* The index of the first start >= t in starts[0 .. n) */
static int start_index(const int64_t *starts, int n, int64_t t) {
  int a = 0, b = n;
  while (a < b) {
    int mid = (a + b) / 2;
    if (starts[mid] < t) a = mid + 1;
    else b = mid;
  }
  return a;
}

static uint64_t assign_offsets(Interval *iv, int n) {
  qsort(iv, (size_t)n, sizeof *iv, cmp_interval);
  { /* MPL_PLAN_SHUFFLE=SEED (a test switch, tests/e2e/plan_shadow.sh): place the buffers in
       a random order, so other pairs share bytes; the plan stays valid for its lifetimes
       (plan_overlap checks it) and the runtime's MPL_SHADOW_CHECK sees what it misses */
    const char *e = getenv("MPL_PLAN_SHUFFLE");
    if (e && *e) {
      uint64_t x = strtoull(e, NULL, 10) * 0x9e3779b97f4a7c15ull + 1;
      for (int i = n - 1; i > 0; i--) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int j = (int)(x % (uint64_t)(i + 1));
        Interval t = iv[i]; iv[i] = iv[j]; iv[j] = t;
      }
    }
  }
  int64_t tmin = INT64_MAX, tmax = 0;
  int64_t *starts = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  if (!starts) die("out of memory");
  for (int i = 0; i < n; i++) {
    starts[i] = iv[i].start;
    if (iv[i].end > tmax) tmax = iv[i].end;
    if (iv[i].start < tmin) tmin = iv[i].start;
  }
  qsort(starts, (size_t)n, sizeof *starts, cmp_i64);
  int ns = 0; /* the distinct starts */
  for (int i = 0; i < n; i++)
    if (ns == 0 || starts[i] != starts[ns - 1]) starts[ns++] = starts[i];
  Tree tr = {1, NULL, NULL};
  while (tr.leaves < ns) tr.leaves *= 2;
  tr.cover = calloc((size_t)(2 * tr.leaves), sizeof(Ranges));
  tr.begin = calloc((size_t)(2 * tr.leaves), sizeof(Ranges));
  Arena arena;
  arena_init(&arena);
  for (int v = 0; tr.cover && tr.begin && v < 2 * tr.leaves; v++) tr.cover[v].a = tr.begin[v].a = &arena;
  int depth = 1;
  for (int w = tr.leaves; w > 1; w /= 2) depth++;
  const Ranges **rg = malloc(sizeof(Ranges *) * (size_t)(3 * depth + 2));
  int *at = malloc(sizeof(int) * 2 * (size_t)(3 * depth + 2));
  if (!tr.cover || !tr.begin || !rg || !at) die("out of memory");
  int *heap = at + 3 * depth + 2;
#define WHOLE(x) ((x)->start <= tmin && (x)->end >= tmax) /* meets every buffer */
  Ranges used = {0}, whole = {0}; /* all placed; those live the whole step */
  uint64_t peak = 0;
  for (int i = 0; i < n; i++) {
    Interval *x = &iv[i];
    /* x's leaves: its start's, to the last start at or before its end */
    int a = start_index(starts, ns, x->start), b = start_index(starts, ns, x->end + 1) - 1;
    if (WHOLE(x)) { /* it meets every buffer: the first gap in all of them */
      x->offset = ranges_fit(&used, x->size);
      ranges_add(&whole, x->offset, x->offset + x->size);
    } else {
      int k = 0;
      rg[k++] = &whole;
      for (int v = tr.leaves + a; v >= 1; v /= 2) rg[k++] = &tr.cover[v]; /* live at x.start */
      for (int lo = tr.leaves + a + 1, hi = tr.leaves + b + 1; lo < hi; lo /= 2, hi /= 2) { /* starting in (x.start, x.end] */
        if (lo & 1) rg[k++] = &tr.begin[lo++];
        if (hi & 1) rg[k++] = &tr.begin[--hi];
      }
      x->offset = first_fit(x->size, rg, k, at, heap);
      uint64_t lo_b = x->offset, hi_b = x->offset + x->size;
      for (int lo = tr.leaves + a, hi = tr.leaves + b + 1; lo < hi; lo /= 2, hi /= 2) { /* the nodes covering its leaves */
        if (lo & 1) ranges_add(&tr.cover[lo++], lo_b, hi_b);
        if (hi & 1) ranges_add(&tr.cover[--hi], lo_b, hi_b);
      }
      for (int v = tr.leaves + a; v >= 1; v /= 2) ranges_add(&tr.begin[v], lo_b, hi_b);
    }
    ranges_add(&used, x->offset, x->offset + x->size);
    if (x->offset + x->size > peak) peak = x->offset + x->size;
  }
#undef WHOLE
  arena_free(&arena);
  free(tr.cover), free(tr.begin), free(starts), free(rg), free(at), free(used.r), free(whole.r);
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
    if (sched_stage_rank(s, st) != r) continue;
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
  if (!ev) die("plan: out of memory");
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

/* The scratch the device holds for rank r's largest fused cross-entropy (job.h's
 * mpl_ce_scratch_floats, of its step's sizes; its inputs are bf16 where the graph stores
 * them so). */
static uint64_t ce_scratch(const PlanIn *in, int r) {
  const Graph *g = in->g;
  uint64_t most = 0;
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_CE_FUSED || op->stage < 0 || sched_stage_rank(in->sched, op->stage) != r) continue;
    int64_t rows, k, v, chunk;
    fuse_ce_sizes(g, op, &rows, &k, &v, &chunk);
    uint64_t b = (uint64_t)mpl_ce_scratch_floats(chunk, v, rows, g->ops[op->in[0]]->dtype == DT_BF16) * sizeof(float);
    if (b > most) most = b;
  }
  return most;
}

/* The live buffers of plan_overlap's sweep in address order: a treap (a search tree by
 * offset, a heap by a random priority) in arrays; node 0 is the empty tree. */
typedef struct Treap {
  int *left, *right;
  uint32_t *prio;
  const Interval **x;
} Treap;

static void treap_split(Treap *t, int n, uint64_t key, int *lo, int *hi) { /* lo: offsets < key */
  if (!n) { *lo = *hi = 0; return; }
  if (t->x[n]->offset < key) {
    treap_split(t, t->right[n], key, &t->right[n], hi);
    *lo = n;
  } else {
    treap_split(t, t->left[n], key, lo, &t->left[n]);
    *hi = n;
  }
}

static int treap_merge(Treap *t, int a, int b) { /* every offset of a below b's */
  if (!a || !b) return a ? a : b;
  if (t->prio[a] > t->prio[b]) {
    t->right[a] = treap_merge(t, t->right[a], b);
    return a;
  }
  t->left[b] = treap_merge(t, a, t->left[b]);
  return b;
}

static int treap_edge(const Treap *t, int n, bool rightmost) {
  while (n && (rightmost ? t->right[n] : t->left[n])) n = rightmost ? t->right[n] : t->left[n];
  return n;
}

static int by_start(const void *pa, const void *pb) {
  const Interval *a = *(Interval *const *)pa, *b = *(Interval *const *)pb;
  return a->start < b->start ? -1 : a->start > b->start;
}

/* The live buffers (a min-heap of their ends) that end before time `now` leave the treap. */
static void expire(Treap *t, int *root, int *heap, int *nh, int64_t now) {
  while (*nh && t->x[heap[0]]->end < now) {
    int n = heap[0], lo, mid, hi;
    heap[0] = heap[--*nh];
    for (int i = 0;;) { /* sift down */
      int c = 2 * i + 1;
      if (c >= *nh) break;
      if (c + 1 < *nh && t->x[heap[c + 1]]->end < t->x[heap[c]]->end) c++;
      if (t->x[heap[i]]->end <= t->x[heap[c]]->end) break;
      int tmp = heap[i];
      heap[i] = heap[c], heap[c] = tmp, i = c;
    }
    treap_split(t, *root, t->x[n]->offset, &lo, &hi);       /* lo < offset <= hi */
    treap_split(t, hi, t->x[n]->offset + 1, &mid, &hi);     /* mid: that offset alone (live ones are disjoint) */
    *root = treap_merge(t, lo, hi);
  }
}

/* A sweep over time with the live buffers in address order: a buffer that starts overlaps
 * a live one only if it overlaps a neighbour in that order (the live ones are disjoint
 * until then). O(n log n). */
int plan_overlap(const PlanInterval *iv, int n, int *other) {
  size_t cap = (size_t)n + 1;
  const Interval **order = malloc(sizeof *order * cap);
  Treap t = {malloc(sizeof(int) * cap), malloc(sizeof(int) * cap), malloc(sizeof(uint32_t) * cap),
             malloc(sizeof *t.x * cap)};
  int *heap = malloc(sizeof(int) * cap);
  if (!order || !t.left || !t.right || !t.prio || !t.x || !heap) die("plan: out of memory");
  int m = 0, root = 0, nh = 0, found = -1;
  for (int i = 0; i < n; i++)
    if (iv[i].size) order[m++] = &iv[i];
  qsort(order, (size_t)m, sizeof *order, by_start);
  uint32_t rng = 0x9e3779b9u;
  for (int i = 0; i < m && found < 0; i++) {
    const Interval *x = order[i];
    expire(&t, &root, heap, &nh, x->start);
    int lo, hi;
    treap_split(&t, root, x->offset, &lo, &hi);
    int below = treap_edge(&t, lo, true), above = treap_edge(&t, hi, false);
    const Interval *clash = below && t.x[below]->offset + t.x[below]->size > x->offset ? t.x[below]
                            : above && x->offset + x->size > t.x[above]->offset       ? t.x[above]
                                                                                       : NULL;
    if (clash) {
      found = (int)(x - iv), *other = (int)(clash - iv);
      break;
    }
    int k = i + 1; /* node ids 1..m */
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    t.left[k] = t.right[k] = 0, t.prio[k] = rng, t.x[k] = x;
    root = treap_merge(&t, treap_merge(&t, lo, k), hi);
    int h = nh++; /* sift up by end */
    heap[h] = k;
    while (h > 0 && t.x[heap[(h - 1) / 2]]->end > t.x[heap[h]]->end) {
      int p = (h - 1) / 2, tmp = heap[p];
      heap[p] = heap[h], heap[h] = tmp, h = p;
    }
  }
  free(order), free(t.left), free(t.right), free(t.prio), free(t.x), free(heap);
  return found;
}

/* MPL_PLAN_BREAK=1, a test switch (tests/e2e/plan_shadow.sh): the second of the first two
 * buffers live at once is put at the first's offset, a plan that breaks the invariant, so a
 * test sees that plan_rank checks every plan. (Each placed buffer ends within the arena,
 * whose size is their largest end: that needs no check.) */
static void break_plan(Interval *iv, int n) {
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (iv[i].size && iv[j].size && iv[i].start <= iv[j].end && iv[j].start <= iv[i].end) {
        iv[j].offset = iv[i].offset;
        return;
      }
}

static PlanRank plan_rank(Arena *a, const PlanIn *in, int r) {
  const Graph *g = in->g;
  int m = in->sched->m, nv = g->nops;
  Live lv = {.m = m, .alias_of = in->alias_of};
  size_t nk = (size_t)nv * m;
  lv.start = malloc(sizeof(int64_t) * nk);
  lv.end = malloc(sizeof(int64_t) * nk);
  lv.persistent = calloc((size_t)nv, 1);
  if (!lv.start || !lv.end || !lv.persistent) die("plan: out of memory");
  for (size_t k = 0; k < nk; k++) lv.start[k] = lv.end[k] = -1;
  for (int v = 0; v < nv; v++) lv.persistent[v] = is_persistent(g->ops[v]);
  touch_leaves(&lv, in, r);
  walk_rank(&lv, in, r);
  int64_t tend = lv.t;
  PlanRank pr = {0};
  Interval *iv = malloc(sizeof(Interval) * (nk ? nk : 1));
  if (!iv) die("plan: out of memory");
  int n = 0, loss = g->loss >= 0 ? root_of(&lv, g->loss) : -1; /* a reshape's loss is its root's buffer */
  for (int v = 0; v < nv; v++) {
    const Op *op = g->ops[v];
    for (int mb = 0; mb < m; mb++) {
      size_t k = (size_t)v * m + mb;
      if (lv.start[k] < 0) continue;
      Interval *x = &iv[n++];
      *x = (Interval){.value = v, .mb = mb, .start = lv.start[k], .end = lv.end[k], .size = aligned_bytes(op)};
      if (lv.persistent[v] || op->kind == OP_INPUT || v == loss) x->start = 0, x->end = tend + 1; /* the loss is read after its FWD */
      if (op->kind == OP_PARAM) pr.param_bytes += x->size;
      else if (op->kind == OP_PARAM_GRAD) pr.grad_bytes += x->size;
      else if (op->kind == OP_INPUT) pr.input_bytes += x->size;
    }
  }
  pr.arena_bytes = assign_offsets(iv, n);
  const char *brk = getenv("MPL_PLAN_BREAK");
  if (brk && *brk) break_plan(iv, n);
  int other, bad = plan_overlap(iv, n, &other); /* the invariant (plan.h), checked on every plan */
  if (bad >= 0)
    die("plan: rank %d: %%%d (micro-batch %d) and %%%d (micro-batch %d) are live at once at overlapping offsets", r,
        iv[bad].value, iv[bad].mb, iv[other].value, iv[other].mb);
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
  pr.ce_scratch = ce_scratch(in, r);
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

int plan_check_limit(Diag *d, const PlanRank *pr, int pp, double mem_limit) {
  int n = 0;
  for (int r = 0; mem_limit > 0 && r < pp; r++)
    if ((double)(pr[r].arena_bytes + pr[r].ce_scratch) > mem_limit) {
      char with[96] = "";
      if (pr[r].ce_scratch)
        snprintf(with, sizeof with, " (the arena and the fused cross-entropy's %llu-byte scratch)",
                 (unsigned long long)pr[r].ce_scratch);
      diag_error_noloc(d, "the plan needs %llu bytes on rank %d%s, more than --mem-limit %.0f: use more stages, more "
                       "micro-batches of fewer rows, or @recompute",
                       (unsigned long long)(pr[r].arena_bytes + pr[r].ce_scratch), r, with, mem_limit);
      n++;
    }
  return n;
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

/* The messages and collectives of one program's steps. */
static void comm_prog(const PlanProg *pg, MplCommCount *c) {
  for (int i = 0; i < pg->nsteps; i++) count(c, pg->steps[i].comm, pg->steps[i].comm_bytes);
}

/* A transfer's values, one message each, unless both stages are on this rank. */
static void comm_xfer(const Mesh3 *ms, const PartXfer *x, int peer_stage, int r, int kind, MplCommCount *c) {
  if (!x || sched_stage_rank(ms->in->sched, peer_stage) == r) return;
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
    case INS_BWD_B: comm_prog(&in->progs[ins->stage][PASS_BWD_B], c); break;
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
  int nslots = mpl_optim_slots(t);
  uint64_t b = 0;
  for (int k = 0; k < u->n[pw->pr]; k++) {
    const JobIns *in = &u->ins[pw->pr][k];
    if (in->kind != JI_UPDATE) continue;
    b += upd_carved((uint64_t)upd_state_elems(u, in, pw->dpi) * (uint64_t)dtype_size(ms->in->params[in->param]->dtype));
  }
  return b * (uint64_t)nslots;
}

PlanWorld *plan_world(Arena *a, const PlanIn *in, const PlanRank *pr) {
  const Graph *g = in->g;
  Mesh3 ms = {.in = in, .pr = pr, .dp = g->mesh.dp, .tp = g->mesh.tp,
              .pp = in->sched->pp, .m = in->sched->m};
  int nworld = ms.dp * ms.tp * ms.pp;
  PlanWorld *pw = arena_alloc(a, sizeof(PlanWorld) * (size_t)nworld);
  for (int w = 0; w < nworld; w++) {
    PlanWorld *x = &pw[w];
    *x = (PlanWorld){.w = w};
    mpl_mesh_coords((MplMesh){ms.dp, ms.pp, ms.tp}, w, &x->dpi, &x->tpi, &x->pr);
    comm_stream(&ms, x->pr, x->comm);
    x->opt_bytes = opt_bytes(&ms, x);
    x->scratch_bytes = upd_scratch_bytes(in->upd, x->pr);
  }
  return pw;
}

/* ---- --emit=plan ------------------------------------------------------------------------ */

static void print_bytes(FILE *out, const char *what, uint64_t b) {
  fprintf(out, "  %-22s %12llu bytes (%.2f MiB)\n", what, (unsigned long long)b, (double)b / 1048576.0);
}

/* Do two world ranks have the same figures (pipeline rank, optimizer state, communication)? */
static bool same_figures(const PlanWorld *a, const PlanWorld *b) {
  return a->pr == b->pr && a->opt_bytes == b->opt_bytes && a->scratch_bytes == b->scratch_bytes && !memcmp(a->comm, b->comm, sizeof a->comm);
}

/* A set of mesh indices: "0-3", "1" or "0,2". */
static void print_set(FILE *out, const bool *in, int n) {
  int cnt = 0, lo = -1, hi = -1;
  for (int i = 0; i < n; i++)
    if (in[i]) cnt++, hi = i, lo = lo < 0 ? i : lo;
  if (cnt > 1 && hi - lo + 1 == cnt) {
    fprintf(out, "%d-%d", lo, hi);
    return;
  }
  for (int i = 0, k = 0; i < n; i++)
    if (in[i]) fprintf(out, "%s%d", k++ ? "," : "", i);
}

/* "ranks 0,2,4,6 (dp 0-1 x tp 0-1, pp 0)": the world ranks of a group, then their coordinates. */
static void print_group(FILE *out, const PlanWorld *pw, const bool *member, int nworld, int dp, int tp) {
  bool *ds = calloc((size_t)dp, 1), *ts = calloc((size_t)tp, 1);
  if (!ds || !ts) die("plan: out of memory");
  int n = 0, nd = 0, nt = 0, pr = -1;
  for (int w = 0; w < nworld; w++)
    if (member[w]) n++;
  fprintf(out, "%s ", n == 1 ? "rank" : "ranks");
  for (int w = 0, k = 0; w < nworld; w++) {
    if (!member[w]) continue;
    fprintf(out, "%s%d", k++ ? "," : "", w);
    nd += !ds[pw[w].dpi], nt += !ts[pw[w].tpi];
    ds[pw[w].dpi] = ts[pw[w].tpi] = true;
    pr = pw[w].pr;
  }
  if (n == 1) {
    for (int w = 0; w < nworld; w++)
      if (member[w]) fprintf(out, " (dp %d, pp %d, tp %d)", pw[w].dpi, pw[w].pr, pw[w].tpi);
  } else if (n == nd * nt) { /* every (dp, tp) pair of the two sets */
    fprintf(out, " (dp ");
    print_set(out, ds, dp);
    fprintf(out, " x tp ");
    print_set(out, ts, tp);
    fprintf(out, ", pp %d)", pr);
  } else {
    fprintf(out, " ((dp, tp) =");
    for (int w = 0; w < nworld; w++)
      if (member[w]) fprintf(out, " (%d, %d)", pw[w].dpi, pw[w].tpi);
    fprintf(out, ", pp %d)", pr);
  }
  free(ds);
  free(ts);
}

/* One step's messages and collectives of a rank, by kind, and their total. */
static void print_comm(FILE *out, const MplCommCount *c) {
  MplCommCount tot = {0, 0};
  fprintf(out, "  communication per step\n");
  for (int k = 0; k < MPL_COMM__COUNT; k++) {
    if (!c[k].calls) continue;
    fprintf(out, "    %-20s %8llu calls %14llu bytes (%.2f MiB)\n", mpl_comm_kind_name(k),
            (unsigned long long)c[k].calls, (unsigned long long)c[k].bytes, (double)c[k].bytes / 1048576.0);
    tot.calls += c[k].calls, tot.bytes += c[k].bytes;
  }
  fprintf(out, "    %-20s %8llu calls %14llu bytes (%.2f MiB)\n", "total", (unsigned long long)tot.calls,
          (unsigned long long)tot.bytes, (double)tot.bytes / 1048576.0);
}

static void print_rank_memory(FILE *out, const Schedule *s, const PlanRank *pr, const SchedTiming *tm,
                              const PlanWorld *pw) {
  int r = pw->pr;
  fprintf(out, ": stages");
  for (int st = 0; st < s->nstages; st++)
    if (sched_stage_rank(s, st) == r) fprintf(out, " %d", st);
  fprintf(out, ", predicted busy %.3g s, bubble %.4f\n", tm->busy[r],
          tm->makespan > 0 ? 1 - tm->busy[r] / tm->makespan : 0);
  print_bytes(out, "params", pr->param_bytes);
  print_bytes(out, "grads", pr->grad_bytes);
  print_bytes(out, "optimizer state", pw->opt_bytes);
  print_bytes(out, "update scratch", pw->scratch_bytes);
  print_bytes(out, "inputs", pr->input_bytes);
  print_bytes(out, "stash (peak)", pr->stash_peak);
  print_bytes(out, "activations (peak)", pr->act_peak);
  print_bytes(out, "arena (peak)", pr->arena_bytes);
  if (pr->ce_scratch) print_bytes(out, "ce scratch (device)", pr->ce_scratch);
}

/* The step's totals, then per pipeline rank the groups of world ranks with the same
 * figures (tp ranks always agree; with ZeRO-1 the replicas differ), each with its
 * memory and its communication. */
void plan_dump(FILE *out, const PlanIn *in, const PlanRank *pr, const PlanWorld *pw, const SchedTiming *timing,
               double flops) {
  const Graph *g = in->g;
  const Schedule *s = in->sched;
  int dp = g->mesh.dp, tp = g->mesh.tp, nworld = dp * tp * s->pp;
  fprintf(out, "plan: model %s, mesh dp=%d pp=%d tp=%d, schedule %s", g->model_name ? g->model_name : "?", dp, s->pp,
          tp, sched_name(s->kind));
  if (s->kind == SCHED_INTERLEAVED) fprintf(out, "(%d)", s->v);
  fprintf(out, ", %d micro-batches, %d stages\n", s->m, s->nstages);
  fprintf(out, "mesh: %d rank%s, world rank = (dp * %d + tp) * %d + pp\n", nworld, nworld == 1 ? "" : "s", tp, s->pp);
  fprintf(out, "flops per step: %.4g (all %d world rank%s)\n", flops, nworld, nworld == 1 ? "" : "s");
  MplCommCount all = {0, 0};
  for (int w = 0; w < nworld; w++)
    for (int k = 0; k < MPL_COMM__COUNT; k++) all.calls += pw[w].comm[k].calls, all.bytes += pw[w].comm[k].bytes;
  fprintf(out, "communication per step, all ranks: %llu calls, %llu payload bytes\n", (unsigned long long)all.calls,
          (unsigned long long)all.bytes);
  fprintf(out, "  (payload: the buffer a rank contributes or receives; a ring all-reduce over n ranks sends\n"
               "   and receives about 2(n-1)/n of it per rank)\n");
  const char *formula;
  double tb = sched_kind_bubble(s->kind, s->pp, s->v, s->m, &formula);
  fprintf(out, "bubble: predicted %.4f, textbook %s = %.4f\n", timing->bubble, formula, tb);
  cost_dump(out, g);
  bool *done = calloc((size_t)nworld, 1), *member = calloc((size_t)nworld, 1);
  if (!done || !member) die("plan: out of memory");
  for (int r = 0; r < s->pp; r++)
    for (int w = r; w < nworld; w += s->pp) {
      if (done[w]) continue;
      for (int v = 0; v < nworld; v++) member[v] = !done[v] && same_figures(&pw[w], &pw[v]);
      for (int v = 0; v < nworld; v++) done[v] |= member[v];
      print_group(out, pw, member, nworld, dp, tp);
      print_rank_memory(out, s, &pr[pw[w].pr], timing, &pw[w]);
      print_comm(out, pw[w].comm);
    }
  free(done);
  free(member);
}
