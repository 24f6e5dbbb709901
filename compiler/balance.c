/*
 * balance.c — automatic stage balancing (pp > 1 and no @stage in the program).
 *
 * Input: the model body's top-level statements (loops unrolled) as segments, each
 * with a time cost (from the FLOP cost model) and a memory need (params, optimizer
 * state, activations held). Output: pp contiguous, non-empty groups of segments.
 *
 * Dynamic programming over (stages used, segments covered), O(pp * n^2):
 *   best[k][i] = min over j of max(best[k-1][j], cost(j .. i-1)),
 * over the j whose group j .. i-1 fits the memory limit. Ties in the slowest stage go
 * to the split with the smaller peak memory, then to the earliest cut, so the result
 * is deterministic. Group sums are added in segment order (no prefix-sum differences).
 */
#include <math.h>
#include <string.h>

#include "sched.h"

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
                     double limit, bool by_mem) {
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
        double nc = fmax(prev->cost, c), nm = fmax(prev->mem, m);
        if (by_mem ? bal_better(nm, nc, &(BalCell){dp[k][i].mem, dp[k][i].cost, 0})
                   : bal_better(nc, nm, &dp[k][i]))
          dp[k][i] = (BalCell){nc, nm, j};
      }
    }
  }
}

int bal_split(int nseg, const double *cost, const double *mem, int pp, double mem_limit,
              int *first_seg_of_stage, char *err, size_t errlen) {
  if (pp < 1 || nseg < pp) {
    sched_errf(err, errlen, "cannot balance %d top-level statements over %d pipeline stages: "
             "each stage needs at least one", nseg, pp);
    return -1;
  }
  Arena scratch;
  arena_init(&scratch);
  BalCell **dp = arena_alloc(&scratch, sizeof(BalCell *) * (pp + 1));
  for (int k = 0; k <= pp; k++)
    dp[k] = arena_alloc(&scratch, sizeof(BalCell) * (nseg + 1));
  bal_fill(dp, nseg, cost, mem, pp, mem_limit, false);
  int rc = 0;
  if (dp[pp][nseg].cost == INFINITY) {
    bal_fill(dp, nseg, cost, mem, pp, 0, true);
    sched_errf(err, errlen, "no split of %d top-level statements over %d pipeline stages fits "
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
