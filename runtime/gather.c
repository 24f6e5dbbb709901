/*
 * gather.c — under mpirun, what world rank 0 collects from the other processes' ranks
 * for the main thread: each step's loss slots, and at the end the trace events and the
 * rank stats of the report. (The params and state of checkpoints: params.c.)
 *
 * Invariant: every process calls these at the same points in the same order, and the
 * messages go over the MPI communicator with TAG_MAIN tags, apart from the ranks' own.
 */
#include "rank.h"

#include <string.h>

/* Under MPI: world rank 0 receives the loss slots of the other ranks of tp index 0 (the
 * ones step_loss reads) into their shadows. */
int gather_losses(MplRun *r, MplErr *err) {
  int m = r->m;
  double *buf = mpl_malloc(sizeof(double) * (size_t)(2 * m));
  if (!buf) return mpl_errf(err, "out of memory");
  int st = MPL_OK;
  for (int d = 0; d < r->dp && st == MPL_OK; d++)
    for (int i = 0; i < r->pp && st == MPL_OK; i++) {
      int w = world_of(r, d, 0, i);
      RankCtx *rc = &r->ranks[w];
      if (w == 0 || (r->me != w && r->me != 0)) continue;
      if (r->me == w) {
        for (int j = 0; j < m; j++) buf[j] = rc->mb_loss[j], buf[m + j] = rc->mb_loss_set[j];
        if (r->mpi->ops->send(r->mpi, 0, TAG_MAIN(MAIN_LOSS, w), buf, sizeof(double) * (size_t)(2 * m)) != MPL_OK)
          st = mpl_errf(err, "step loss: %s", r->mpi->err.msg);
      } else if (r->mpi->ops->recv(r->mpi, w, TAG_MAIN(MAIN_LOSS, w), buf, sizeof(double) * (size_t)(2 * m)) != MPL_OK) {
        st = mpl_errf(err, "step loss: %s", r->mpi->err.msg);
      } else {
        for (int j = 0; j < m; j++) rc->mb_loss[j] = buf[j], rc->mb_loss_set[j] = buf[m + j] != 0;
      }
    }
  mpl_free(buf);
  return st;
}

/* Under MPI: every rank's trace events to world rank 0 (a count and the wall clock at its
 * trace's start, then the events), put on rank 0's time base (pass 73: each process's
 * events counted from its own start, and receives ended before their sends began). */
int gather_trace(MplRun *r, MplErr *err) {
  MplComm *c = r->mpi;
  if (r->me != 0) {
    MplTraceRank *tr = &r->trace.ranks[r->me];
    int64_t n[2] = {tr->n, r->trace.real0_ns};
    if (c->ops->send(c, 0, TAG_MAIN(MAIN_TRACE_N, r->me), n, sizeof n) != MPL_OK ||
        c->ops->send(c, 0, TAG_MAIN(MAIN_TRACE_EV, r->me), tr->ev, (size_t)n[0] * sizeof *tr->ev) != MPL_OK)
      return mpl_errf(err, "trace: %s", c->err.msg);
    return MPL_OK;
  }
  for (int w = 1; w < r->nworld; w++) {
    MplTraceRank *tr = &r->trace.ranks[w];
    int64_t h[2] = {0, 0};
    if (c->ops->recv(c, w, TAG_MAIN(MAIN_TRACE_N, w), h, sizeof h) != MPL_OK) return mpl_errf(err, "trace: %s", c->err.msg);
    int64_t n = h[0];
    MplTraceEvent *ev = mpl_malloc((size_t)n * sizeof *ev + 1);
    if (!ev) return mpl_errf(err, "trace: out of memory");
    mpl_free(tr->ev);
    tr->ev = ev, tr->n = tr->cap = n;
    if (c->ops->recv(c, w, TAG_MAIN(MAIN_TRACE_EV, w), ev, (size_t)n * sizeof *ev) != MPL_OK)
      return mpl_errf(err, "trace: %s", c->err.msg);
    double shift = (double)(h[1] - r->trace.real0_ns) / 1000.0; /* its start after rank 0's, in us */
    for (int64_t i = 0; i < n; i++) ev[i].ts += shift;
  }
  return MPL_OK;
}

/* Under MPI: world rank 0 receives every rank's stats (the others send theirs). */
void gather_stats(const MplRun *r, MplRankStats *all) {
  MplComm *c = r->mpi;
  const MplRankStats *mine = &r->ranks[r->me].stats;
  if (r->me != 0) {
    c->ops->send(c, 0, TAG_MAIN(MAIN_STATS, r->me), mine, sizeof *mine);
    return;
  }
  all[0] = *mine;
  for (int w = 1; w < r->nworld; w++)
    if (c->ops->recv(c, w, TAG_MAIN(MAIN_STATS, w), &all[w], sizeof all[w]) != MPL_OK) memset(&all[w], 0, sizeof all[w]);
}
