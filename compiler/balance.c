/*
 * balance.c — automatic stage balancing: when pp > 1 and the program places nothing
 * itself (no @stage), the model body's top-level statements are cut into pp
 * contiguous stages (bal_stages, run by the driver after shard.c, before autodiff).
 *
 * The whole balancer lives here:
 *  - segments: the top-level statements (loops unrolled) that compute something; one
 *    that only declares params or makes constants joins the next such statement
 *    (work_segments), so no stage can be left with nothing to run;
 *  - the cost of each segment (segment_costs): its time on a device of speed 1
 *    (cost_fwd_bwd, cost.c: measured by a profile, else modelled, forward + backward
 *    ~ 3x forward), and the memory it pins on its stage; a stage's time is its
 *    segments' over the speed of the device of its pipeline rank (--device-speed);
 *  - the split (bal_split): dynamic programming over (stages used, segments covered),
 *    O(pp * n^2):
 *      best[k][i] = min over j of max(best[k-1][j], cost(j .. i-1) / speed[k-1]),
 *    over the j whose group j .. i-1 fits the memory limit (--mem-limit). Ties in the
 *    slowest stage go to the split with the smaller peak memory, then to the earliest
 *    cut, so the result is deterministic. Group sums are added in segment order (no
 *    prefix-sum differences).
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

/* ---- segments and their costs ------------------------------------------------------ */

/* Memory a segment pins on its stage: params with grads and two AdamW moments,
 * plus the activations it keeps for every micro-batch in flight (at most pp).
 * slot[] maps each top-level statement to its segment (see work_segments). */
static void segment_costs(const Graph *g, const int *slot, double *cost, double *mem) {
  int pp = g->mesh.pp;
  bool *seen = calloc((size_t)g->nops, 1);
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->seg < 0) continue;
    int k = slot[op->seg];
    cost[k] += cost_fwd_bwd(g, op);
    mem[k] += pp * (double)op_bytes(op);
    for (int j = 0; j < op->nin; j++) {
      const Op *in = g->ops[op->in[j]];
      if (in->kind != OP_PARAM || seen[in->id]) continue;
      seen[in->id] = true;
      mem[k] += 4 * (double)op_bytes(in);
    }
  }
  free(seen);
}

/* The balancer's segments are the top-level statements that compute something (have
 * an op with a stage): one that only declares params or makes constants, whose ops
 * are made on each stage that reads them, joins the next such statement (the last
 * one, at the end), so no stage can be left with nothing to run. slot[statement] =
 * its segment; returns the number of segments. */
static int work_segments(const Graph *g, int nstmt, int *slot) {
  bool *work = calloc((size_t)nstmt + 1, 1);
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->seg >= 0 && g->ops[i]->stage >= 0) work[g->ops[i]->seg] = true;
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
  char more[96] = "";
  int idle = nstmt - nseg;
  if (idle) snprintf(more, sizeof more, " (not counting %d that only declare%s params or make%s constants)", idle,
                     idle == 1 ? "s" : "", idle == 1 ? "s" : "");
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
  int rc = bal_split(nseg, cost, mem, nst, speed, mem_limit, first, err, sizeof err);
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
