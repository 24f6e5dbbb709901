/*
 * balance.c — automatic stage balancing: when pp > 1 and the program places nothing
 * itself (no @stage), the model body's top-level statements are cut into pp
 * contiguous stages (bal_stages, run by the driver after shard.c, before autodiff).
 *
 * The whole balancer lives here:
 *  - segments: the top-level statements (loops unrolled) that compute something the
 *    loss needs; one that only declares params, makes constants or computes values the
 *    loss does not read joins the next such statement (work_segments), so no stage can
 *    be left with nothing to run;
 *  - the cost of each segment (segment_costs): its time on a device of speed 1
 *    (cost_fwd_bwd, cost.c: measured by a profile, else modelled, forward + backward
 *    ~ 3x forward), and the memory it pins on its stage; a stage's time is its
 *    segments' over the speed of the device of its pipeline rank (--device-speed);
 *  - the split (bal_split): dynamic programming over (stages used, segments covered),
 *    O(pp * n^2):
 *      best[k][i] = min over j of max(best[k-1][j], cost(j .. i-1) / speed[k-1]),
 *    over the j whose group j .. i-1 fits the memory limit (--mem-limit). Ties in the
 *    slowest stage go to the split with the smaller peak memory, then to the latest
 *    cuts (the last stage's first, back to the first's), so the result is deterministic. Group sums are added in segment order (no
 *    prefix-sum differences).
 *  - under zbv, whose ranks hold two stages each (r and 2pp-1-r), also the split that
 *    balances the ranks rather than the stages (bal_split_v): the same dynamic
 *    programming from both ends at once, over (ranks placed, front cut, back cut),
 *    O(pp * n^4), while that stays small (ZBV_DP_WORK). Which of the two is kept is
 *    decided by playing the zbv schedule with each (split_makespan: passes of a third of
 *    each stage's time; the rank split must be 3% shorter to be kept, as the estimate is
 *    rough): evenly balanced stages make the better V when the segments are fine,
 *    evenly loaded ranks when a few large segments cannot be cut even;
 *  - under interleaved(v), whose rank r holds stages r, r + pp, ...: the per-stage split,
 *    then its cuts moved (one at a time, the others pushed along) while that lowers the
 *    memory past --mem-limit, the busiest rank's time or the largest rank memory, in
 *    that order (il_refine: a local search, not an optimum).
 *
 * Invariants: every op with a segment and a stage gets the stage of its segment's
 * group; ops without a stage (leaves, constants) stay without one; on an error nothing
 * is moved.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mplc.h"
#include "sched.h"

/* ---- the split ------------------------------------------------------------------ */

typedef struct BalCell {
  double cost; /* slowest group so far; INFINITY: no split */
  double mem;  /* largest group memory so far */
  int cut;     /* first segment of the last group */
} BalCell;

static bool bal_better(double c, double m, const BalCell *cur) {
  return c < cur->cost || (c == cur->cost && m < cur->mem);
}

/*
 * Fills dp[k][i] for k = 1 .. pp. by_mem: minimise the peak memory instead of the
 * cost (to report the best achievable peak when nothing fits).
 */
static void bal_fill(BalCell **dp, int nseg, const double *cost, const double *mem, int pp,
                     const double *speed, double limit, bool by_mem) {
  for (int k = 0; k <= pp; k++)
    for (int i = 0; i <= nseg; i++)
      dp[k][i] = (BalCell){INFINITY, INFINITY, -1};
  dp[0][0] = (BalCell){0, 0, -1};
  for (int k = 1; k <= pp; k++) {
    for (int i = k; i <= nseg; i++) {
      double c = 0, m = 0;
      for (int j = i - 1; j >= k - 1; j--) {
        c += cost[j];
        m += mem ? mem[j] : 0;
        if (limit > 0 && m > limit)
          break;
        const BalCell *prev = &dp[k - 1][j];
        if (prev->cost == INFINITY)
          continue;
        double nc = fmax(prev->cost, speed ? c / speed[k - 1] : c), nm = fmax(prev->mem, m);
        if (by_mem ? bal_better(nm, nc, &(BalCell){dp[k][i].mem, dp[k][i].cost, 0})
                   : bal_better(nc, nm, &dp[k][i]))
          dp[k][i] = (BalCell){nc, nm, j};
      }
    }
  }
}

int bal_split(int nseg, const double *cost, const double *mem, int pp, const double *speed, double mem_limit,
              int *first_seg_of_stage, char *err, size_t errlen) {
  if (pp < 1 || nseg < pp) {
    snprintf(err, errlen, "cannot balance %d top-level statements over %d pipeline stages: "
             "each stage needs at least one", nseg, pp);
    return -1;
  }
  Arena scratch;
  arena_init(&scratch);
  BalCell **dp = arena_alloc(&scratch, sizeof(BalCell *) * (pp + 1));
  for (int k = 0; k <= pp; k++)
    dp[k] = arena_alloc(&scratch, sizeof(BalCell) * (nseg + 1));
  bal_fill(dp, nseg, cost, mem, pp, speed, mem_limit, false);
  int rc = 0;
  if (dp[pp][nseg].cost == INFINITY) {
    bal_fill(dp, nseg, cost, mem, pp, speed, 0, true);
    snprintf(err, errlen, "no split of %d top-level statements over %d pipeline stages fits "
             "--mem-limit %.0f bytes per rank; the best split needs %.0f bytes", nseg, pp,
             mem_limit, dp[pp][nseg].mem);
    rc = -1;
  } else {
    for (int k = pp, i = nseg; k > 0; k--) {
      first_seg_of_stage[k - 1] = dp[k][i].cut;
      i = dp[k][i].cut;
    }
  }
  arena_free(&scratch);
  return rc;
}

/* ---- zbv: two groups per rank, from both ends ------------------------------------------ */

enum { ZBV_DP_WORK = 200000000 };

typedef struct VCell {
  double cost, mem; /* slowest rank so far, largest rank memory so far; INFINITY: none */
  int pi, pj;       /* the cuts before this rank's groups */
} VCell;

/* Extends the front group [i0, i) and the back group [j, j0) of rank k from every
 * reachable (i0, j0) of layer a into layer b; rem: segments the later ranks need. */
static void v_layer(const VCell *a, VCell *b, int n, const double *cost, const double *mem, double speed,
                    double limit, int rem) {
  for (int i0 = 0; i0 <= n; i0++)
    for (int j0 = i0; j0 <= n; j0++) {
      const VCell *p = &a[i0 * (n + 1) + j0];
      if (p->cost == INFINITY) continue;
      double cf = 0, mf = 0;
      for (int i = i0 + 1; j0 - i >= rem + 1; i++) {
        cf += cost[i - 1], mf += mem ? mem[i - 1] : 0;
        double cb = 0, mb = 0;
        for (int j = j0 - 1; j - i >= rem; j--) {
          cb += cost[j], mb += mem ? mem[j] : 0;
          if (limit > 0 && mf + mb > limit) break;
          double nc = fmax(p->cost, (cf + cb) / speed), nm = fmax(p->mem, mf + mb);
          VCell *q = &b[i * (n + 1) + j];
          if (bal_better(nc, nm, &(BalCell){q->cost, q->mem, 0})) *q = (VCell){nc, nm, i0, j0};
        }
      }
    }
}

/* The last rank takes the middle [i0, j0), cut in two where its halves are most even. */
static int v_middle(int i0, int j0, const double *cost) {
  double total = 0, front = 0, best = INFINITY;
  int cut = i0 + 1;
  for (int s = i0; s < j0; s++) total += cost[s];
  for (int m = i0 + 1; m < j0; m++) {
    front += cost[m - 1];
    double worst = fmax(front, total - front);
    if (worst < best) best = worst, cut = m;
  }
  return cut;
}

int bal_split_v(int nseg, const double *cost, const double *mem, int pp, const double *speed, double mem_limit,
                int *first_seg_of_stage, char *err, size_t errlen) {
  int n = nseg, S = 2 * pp;
  if (nseg < S) return bal_split(nseg, cost, mem, S, NULL, mem_limit, first_seg_of_stage, err, errlen);
  size_t cells = (size_t)(n + 1) * (size_t)(n + 1);
  VCell *dp = malloc(sizeof(VCell) * cells * (size_t)pp);
  if (!dp) die("out of memory");
  for (size_t c = 0; c < cells * (size_t)pp; c++) dp[c] = (VCell){INFINITY, INFINITY, -1, -1};
  dp[n] = (VCell){0, 0, -1, -1}; /* layer 0, (0, n): nothing placed */
  for (int k = 0; k + 1 < pp; k++)
    v_layer(dp + cells * k, dp + cells * (k + 1), n, cost, mem, speed ? speed[k] : 1, mem_limit, 2 * (pp - 1 - k));
  VCell best = {INFINITY, INFINITY, -1, -1};
  const VCell *last = dp + cells * (pp - 1);
  double sl = speed ? speed[pp - 1] : 1;
  for (int i0 = 0; i0 <= n; i0++)
    for (int j0 = i0 + 2; j0 <= n; j0++) {
      const VCell *p = &last[i0 * (n + 1) + j0];
      if (p->cost == INFINITY) continue;
      double c = 0, m = 0;
      for (int s = i0; s < j0; s++) c += cost[s], m += mem ? mem[s] : 0;
      if (mem_limit > 0 && m > mem_limit) continue;
      double nc = fmax(p->cost, c / sl), nm = fmax(p->mem, m);
      if (bal_better(nc, nm, &(BalCell){best.cost, best.mem, 0})) best = (VCell){nc, nm, i0, j0};
    }
  int rc = 0;
  if (best.cost == INFINITY) {
    rc = bal_split(nseg, cost, mem, S, NULL, mem_limit, first_seg_of_stage, err, errlen); /* its message */
    if (rc == 0) snprintf(err, errlen, "no split of %d top-level statements over %d zbv stages fits --mem-limit %.0f "
                          "bytes per rank", nseg, S, mem_limit), rc = -1;
  } else {
    int i = best.pi, j = best.pj;
    first_seg_of_stage[pp - 1] = i, first_seg_of_stage[pp] = v_middle(i, j, cost);
    for (int k = pp - 1; k > 0; k--) {
      const VCell *c = &dp[cells * k + (size_t)i * (n + 1) + j];
      first_seg_of_stage[k - 1] = c->pi, first_seg_of_stage[S - k] = j;
      i = c->pi, j = c->pj;
    }
  }
  free(dp);
  return rc;
}

/* The schedule's makespan for a split (first segment of each stage): a chain of stages
 * whose F, B and W each take a third of the stage's time on its rank's device (zbv's V,
 * or interleaved(v)'s chunks). */
static double split_makespan(const Graph *g, int nseg, const double *cost, const double *speed, const int *first) {
  int S = g->nstages;
  double *t = calloc((size_t)S, sizeof(double));
  int (*edges)[2] = calloc((size_t)S, sizeof(int[2]));
  for (int s = 0; s < S; s++) {
    int end = s + 1 < S ? first[s + 1] : nseg;
    for (int i = first[s]; i < end; i++) t[s] += cost[i];
    t[s] /= 3 * (speed ? speed[s] : 1);
    if (s + 1 < S) edges[s][0] = s, edges[s][1] = s + 1;
  }
  SchedSpec spec = {.kind = g->train.schedule, .pp = g->mesh.pp, .v = S / g->mesh.pp, .m = (int)g->train.microbatches, .nedges = S - 1,
                    .edges = (const int(*)[2])edges, .F = t, .B = t, .W = t};
  Arena a;
  arena_init(&a);
  Schedule *s = sched_build(&a, &spec, NULL, 0);
  SchedTiming tm = {0};
  if (s) sched_simulate(s, t, t, t, 0, NULL, NULL, &tm);
  arena_free(&a);
  free(t), free(edges);
  return s ? tm.makespan : INFINITY;
}

/* ---- interleaved(v): v groups per rank, refined by moving cuts ------------------------- */

/* A split's standing under interleaved(v), whose rank r runs stages r, r + pp, ...: the
 * memory past the limit (0 without one), then the busiest rank's time, then the largest
 * rank memory (each rank's its stages' sums, in segment order). */
typedef struct ILScore {
  double over, time, mem;
} ILScore;

static ILScore il_score(int nseg, int nst, int pp, const double *cost, const double *mem, const double *rank_speed,
                        double limit, const int *first, double *rt, double *rm) {
  for (int r = 0; r < pp; r++) rt[r] = rm[r] = 0;
  for (int s = 0; s < nst; s++) {
    int end = s + 1 < nst ? first[s + 1] : nseg;
    double c = 0, m = 0;
    for (int i = first[s]; i < end; i++) c += cost[i], m += mem[i];
    rt[s % pp] += c, rm[s % pp] += m;
  }
  ILScore sc = {0, 0, 0};
  for (int r = 0; r < pp; r++) {
    double t = rt[r] / (rank_speed ? rank_speed[r] : 1);
    if (t > sc.time) sc.time = t;
    if (rm[r] > sc.mem) sc.mem = rm[r];
    if (limit > 0 && rm[r] > limit) sc.over += rm[r] - limit;
  }
  return sc;
}

static bool il_better(ILScore a, ILScore b) {
  if (a.over != b.over) return a.over < b.over;
  if (a.time != b.time) return a.time < b.time * (1 - 1e-9);
  return a.mem < b.mem * (1 - 1e-9);
}

/* The per-stage split (bal_split) balances the stages, not the ranks that hold v of them
 * each (pass 56: a rank got all four 2048-wide layers of a 10-block MLP under
 * interleaved(4), past --mem-limit, while a split by hand fitted; under interleaved(2) a
 * rank had 2.5x the other's work). From it, a local search: each round tries every cut at
 * every place (the cuts beyond pushed along so that each stage keeps a segment) and
 * keeps the move that lowers the score (il_score) most, first found on a tie, until none
 * does (at most 64 rounds, and only while a round costs under IL_WORK, the rounds together
 * under 4 x IL_WORK). Deterministic. */
enum { IL_WORK = 20000000 };

static void il_refine(int nseg, int nst, int pp, const double *cost, const double *mem, const double *rank_speed,
                      double limit, int *first) {
  double work = (double)nst * nseg * (nseg + nst); /* a round's */
  if (work > IL_WORK) return;
  int rounds = work * 64 > 4.0 * IL_WORK ? (int)(4.0 * IL_WORK / work) : 64; /* at most 4 x IL_WORK in all */
  double *rt = calloc((size_t)pp, sizeof(double)), *rm = calloc((size_t)pp, sizeof(double));
  int *t = calloc((size_t)nst, sizeof(int)), *best = calloc((size_t)nst, sizeof(int));
  if (!rt || !rm || !t || !best) die("out of memory");
  ILScore cur = il_score(nseg, nst, pp, cost, mem, rank_speed, limit, first, rt, rm);
  for (int round = 0; round < rounds; round++) {
    ILScore bs = cur;
    bool found = false;
    for (int k = 1; k < nst; k++)
      for (int c = k; c <= nseg - (nst - k); c++) {
        if (c == first[k]) continue;
        memcpy(t, first, sizeof(int) * (size_t)nst);
        t[k] = c;
        for (int j = k + 1; j < nst; j++) t[j] = t[j] > t[j - 1] ? t[j] : t[j - 1] + 1;
        for (int j = k - 1; j >= 1; j--) t[j] = t[j] < t[j + 1] ? t[j] : t[j + 1] - 1;
        ILScore sc = il_score(nseg, nst, pp, cost, mem, rank_speed, limit, t, rt, rm);
        if (il_better(sc, bs)) bs = sc, found = true, memcpy(best, t, sizeof(int) * (size_t)nst);
      }
    if (!found) break;
    cur = bs;
    memcpy(first, best, sizeof(int) * (size_t)nst);
  }
  free(rt), free(rm), free(t), free(best);
}

/* ---- segments and their costs ------------------------------------------------------ */

/* Memory a segment pins on its stage: params with grads and two AdamW moments,
 * plus the activations it keeps for every micro-batch in flight (at most pp).
 * slot[] maps each top-level statement to its segment (see work_segments). */
static void segment_costs(const Graph *g, const int *slot, double *cost, double *mem) {
  int pp = g->mesh.pp;
  bool *seen = calloc((size_t)g->nops, 1), *needs = calloc((size_t)g->nops + 1, 1);
  if (!seen || !needs) die("out of memory");
  for (int i = 0; i < g->nops; i++) { /* a value that depends on a param gets a gradient */
    const Op *op = g->ops[i];
    needs[i] = op->kind == OP_PARAM;
    for (int j = 0; j < op->nin && !needs[i]; j++) needs[i] = needs[op->in[j]];
  }
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->seg < 0) continue;
    int k = slot[op->seg];
    cost[k] += cost_fwd_bwd(g, op, needs);
    mem[k] += pp * (double)op_bytes(op);
    for (int j = 0; j < op->nin; j++) {
      const Op *in = g->ops[op->in[j]];
      if (in->kind != OP_PARAM || seen[in->id]) continue;
      seen[in->id] = true;
      mem[k] += 4 * (double)op_bytes(in);
    }
  }
  free(seen);
  free(needs);
}

/* The balancer's segments are the top-level statements that compute something the loss
 * needs (have an op with a stage that reaches the loss): one that only declares params or
 * makes constants, whose ops are made on each stage that reads them, joins the next such
 * statement (the last one, at the end), so no stage can be left with nothing to run; so
 * does one whose only op, the logits' product, the next statement's fused cross-entropy
 * took (ce_fuse.c), and one whose values nothing the loss needs reads (a stage of those
 * alone would idle: busy 0). slot[statement] = its segment; returns the number of
 * segments. */
static int work_segments(const Graph *g, int nstmt, int *slot) {
  bool *work = calloc((size_t)nstmt + 1, 1), *live = graph_live_from_loss(g);
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->seg >= 0 && g->ops[i]->stage >= 0 && (live[i] || g->loss < 0)) work[g->ops[i]->seg] = true;
  free(live);
  int nseg = 0;
  for (int t = 0; t < nstmt; t++) nseg += work[t];
  for (int t = nstmt - 1, k = nseg; t >= 0; t--) { /* k: the segment of the next statement with work */
    if (work[t]) k--;
    slot[t] = k < nseg ? k : nseg - 1;
  }
  free(work);
  return nseg;
}

/* "cannot balance 4 pipeline stages (pp = 4) over 3 top-level statements ...". */
static void too_few_segments(Diag *d, const Graph *g, int nstmt, int nseg) {
  char more[192] = "";
  int idle = nstmt - nseg;
  if (idle)
    snprintf(more, sizeof more, " (not counting %d with no work of %s own: params, constants, logits fused into the loss, values the loss does not need)",
             idle, idle == 1 ? "its" : "their");
  diag_error(d, g->stages_loc, "cannot balance %d pipeline stages (%s) over %d top-level statement%s of model %s%s",
             g->nstages, g->stages_from, nseg, nseg == 1 ? "" : "s", g->model_name ? g->model_name : "?", more);
}

int bal_stages(Diag *d, Graph *g, double mem_limit) {
  if (!g->auto_stages || g->nstages <= 1) return 0;
  int nstmt = 0;
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->seg + 1 > nstmt) nstmt = g->ops[i]->seg + 1;
  int nst = g->nstages;
  int *slot = calloc((size_t)nstmt + 1, sizeof(int));
  int nseg = work_segments(g, nstmt, slot);
  if (nseg < nst) {
    too_few_segments(d, g, nstmt, nseg);
    free(slot);
    return 1;
  }
  double *cost = calloc((size_t)nseg, sizeof(double)), *mem = calloc((size_t)nseg, sizeof(double));
  int *first = calloc((size_t)nst, sizeof(int));
  segment_costs(g, slot, cost, mem);
  double *speed = NULL;
  if (g->rank_speed) {
    speed = calloc((size_t)nst, sizeof(double));
    for (int s = 0; s < nst; s++) speed[s] = g->rank_speed[graph_stage_rank(g, s)];
  }
  char err[256];
  int pp = g->mesh.pp;
  double mem_limit_in = mem_limit;
  int rc = bal_split(nseg, cost, mem, nst, speed, mem_limit, first, err, sizeof err);
  /* The stage memory here is an estimate that errs high (every forward value of pp
     micro-batches, before recomputation, fusion and liveness: about twice GPT-2's real
     plan): when no split meets --mem-limit by it, the fastest split is kept and the plan
     itself is checked against the limit (plan_check_limit), which may well pass. */
  if (rc && mem_limit > 0) {
    mem_limit = 0;
    rc = bal_split(nseg, cost, mem, nst, speed, 0, first, err, sizeof err);
  }
  double work = (double)pp * nseg * nseg * (double)nseg * nseg;
  if (!rc && g->train.schedule == SCHED_ZBV && nst == 2 * pp && work <= ZBV_DP_WORK) {
    int *byrank = calloc((size_t)nst, sizeof(int));
    char err2[256];
    if (bal_split_v(nseg, cost, mem, pp, g->rank_speed, mem_limit, byrank, err2, sizeof err2) == 0 &&
        split_makespan(g, nseg, cost, speed, byrank) < 0.97 * split_makespan(g, nseg, cost, speed, first))
      memcpy(first, byrank, sizeof(int) * (size_t)nst);
    free(byrank);
  }
  if (!rc && g->train.schedule == SCHED_INTERLEAVED && nst > pp) {
    /* kept when the schedule played with it is no slower, or it alone meets --mem-limit */
    int *byrank = malloc(sizeof(int) * (size_t)nst);
    if (!byrank) die("out of memory");
    memcpy(byrank, first, sizeof(int) * (size_t)nst);
    il_refine(nseg, nst, pp, cost, mem, g->rank_speed, mem_limit_in, byrank);
    double *rt = calloc((size_t)pp, sizeof(double)), *rm = calloc((size_t)pp, sizeof(double));
    if (!rt || !rm) die("out of memory");
    ILScore a = il_score(nseg, nst, pp, cost, mem, g->rank_speed, mem_limit_in, first, rt, rm);
    ILScore b = il_score(nseg, nst, pp, cost, mem, g->rank_speed, mem_limit_in, byrank, rt, rm);
    if (b.over < a.over || (b.over == a.over && split_makespan(g, nseg, cost, speed, byrank) <=
                                                    split_makespan(g, nseg, cost, speed, first)))
      memcpy(first, byrank, sizeof(int) * (size_t)nst);
    free(rt), free(rm), free(byrank);
  }
  free(speed);
  if (rc) diag_error_noloc(d, "stage balancing: %s", err);
  for (int i = 0; !rc && i < g->nops; i++) {
    Op *op = g->ops[i];
    if (op->seg < 0 || op->stage < 0) continue;
    int s = 0;
    while (s + 1 < nst && first[s + 1] <= slot[op->seg]) s++;
    op->stage = s;
  }
  free(slot);
  free(cost);
  free(mem);
  free(first);
  return rc ? 1 : 0;
}
