/*
 * measure.c — mplrun --profile: each rank's measured time per forward op of the graph,
 * forward and backward apart, its device and its GEMM rate, written as a profile
 * (profile.c) for mplc --profile to balance and plan with.
 *
 * How a time reaches an op: run_prog (exec.c) times each step of a counted step's
 * forward, input-gradient and weight-gradient programs (measure_step) and gives it to
 * the forward ops the step names (JobStep.src: a fused kernel's ops, a GEMM's product, a
 * backward step's forward op), each by its share of the step's modelled time. A @recompute
 * copy, run in a backward program, names no op (jobgen.c), so its time goes to none: mplc
 * times a recomputed op at its measured forward. The
 * counted steps are the closing report's: every step after the first (all of a one-step
 * run). On a device that runs asynchronously (cuda) each step is waited for before it is
 * timed, which makes a profiled run slower but its times the device's.
 *
 * What is written: for each op of Job.opids, the times measured by the pipeline rank of
 * its stage (replica 0, tp index 0: world rank = pipeline rank), per micro-batch (the
 * sums over the counted steps divided by steps x micro-batches); per pipeline rank its
 * device kind, threads, the speed it was compiled for, its GEMM rate and its per-step
 * busy, wall, compute, message and update times. Under mpirun world rank 0 gathers the
 * other pipeline ranks' sums (MAIN_PROF messages) and writes the file.
 */
#include "rank.h"

#include <string.h>

int measure_init(MplRun *r, MplErr *err) {
  r->profiling = r->opts.profile_path != NULL;
  for (int w = 0; r->profiling && w < r->nworld; w++) {
    RankCtx *rc = &r->ranks[w];
    if (!rc->live) continue;
    rc->prof = mpl_calloc((size_t)r->job->nopids * 3 + 1, sizeof(double));
    if (!rc->prof) return mpl_errf(err, "out of memory");
  }
  return MPL_OK;
}

int measure_step(RankCtx *rc, const JobStep *s, int which, double t0, MplErr *err) {
  if (rc->dev.ops->sync && rc->dev.ops->sync(&rc->dev, err) != MPL_OK) return MPL_ERR;
  double dt = now_s() - t0;
  int slot = which == JP_FWD ? 0 : which == JP_BWD_B ? 1 : 2;
  for (int k = 0; k < s->nsrc; k++) rc->prof[(size_t)s->src[k] * 3 + slot] += dt * s->src_w[k];
  if (s->kind == JS_GEMM) {
    rc->gemm_flops += 2.0 * (double)s->M * (double)s->N * (double)s->K * (double)s->batch;
    rc->gemm_s += dt;
  }
  return MPL_OK;
}

/* A pipeline rank's sums as one array: [nopids * 3] op times, then GEMM FLOPs and seconds,
 * then the stats (busy, wall, compute, msg, update, steps) and the elements it updates. */
enum { RANK_EXTRA = 9 };

static void pack_rank(const RankCtx *rc, int nopids, double *buf) {
  memcpy(buf, rc->prof, sizeof(double) * (size_t)nopids * 3);
  double *x = buf + (size_t)nopids * 3;
  const MplRankStats *s = &rc->stats;
  x[0] = rc->gemm_flops, x[1] = rc->gemm_s, x[2] = s->busy_s, x[3] = s->wall_s, x[4] = s->compute_s;
  x[5] = s->msg_s, x[6] = s->update_s, x[7] = (double)s->steps, x[8] = (double)s->update_elems;
}

/* Every pipeline rank's sums into bufs[pr] (world rank pr: replica 0, tp index 0); under
 * MPI the others send theirs to world rank 0. */
static int gather_ranks(MplRun *r, double **bufs, size_t n, MplErr *err) {
  int nop = r->job->nopids;
  if (!r->mpi) {
    for (int pr = 0; pr < r->pp; pr++) pack_rank(&r->ranks[pr], nop, bufs[pr]);
    return MPL_OK;
  }
  MplComm *c = r->mpi;
  if (r->me != 0) {
    if (r->me >= r->pp) return MPL_OK;
    pack_rank(&r->ranks[r->me], nop, bufs[r->me]);
    if (c->ops->send(c, 0, TAG_MAIN(MAIN_PROF, r->me), bufs[r->me], sizeof(double) * n) != MPL_OK)
      return mpl_errf(err, "profile: %s", c->err.msg);
    return MPL_OK;
  }
  pack_rank(&r->ranks[0], nop, bufs[0]);
  for (int pr = 1; pr < r->pp; pr++)
    if (c->ops->recv(c, pr, TAG_MAIN(MAIN_PROF, pr), bufs[pr], sizeof(double) * n) != MPL_OK)
      return mpl_errf(err, "profile: %s", c->err.msg);
  return MPL_OK;
}

/* The profile of the pipeline ranks' sums (world rank 0 only); the strings are the job's. */
static void fill_profile(const MplRun *r, double *const *bufs, MplProfile *p, MplProfileRank *ranks,
                         MplProfileOp *ops) {
  const Job *job = r->job;
  int nop = job->nopids;
  *p = (MplProfile){.model = job->model_name, .source = job->source_name,
                    .schedule = (char *)mpl_sched_name(job->train.schedule),
                    .precision = (char *)mpl_prec_name(job->train.precision), .dp = r->dp, .pp = r->pp, .tp = r->tp,
                    .microbatches = r->m, .nranks = r->pp, .ranks = ranks, .nops = nop, .ops = ops};
  for (int pr = 0; pr < r->pp; pr++) {
    const double *x = bufs[pr] + (size_t)nop * 3;
    double steps = x[7] > 0 ? x[7] : 1;
    p->steps = (int)x[7];
    ranks[pr] = (MplProfileRank){.device = (char *)r->devops->name, .threads = r->opts.threads,
                                 .speed = job->rank_speed ? job->rank_speed[pr] : 1,
                                 .gemm_gflops = x[1] > 0 ? x[0] / x[1] / 1e9 : 0, .busy_s = x[2] / steps,
                                 .wall_s = x[3] / steps, .compute_s = x[4] / steps, .msg_s = x[5] / steps,
                                 .update_s = x[6] / steps, .update_elems = x[8]};
  }
  for (int i = 0; i < nop; i++) {
    int st = job->opids[i].stage, pr = st >= 0 ? job->stages[st].rank : 0;
    const double *t = bufs[pr] + (size_t)i * 3, *x = bufs[pr] + (size_t)nop * 3;
    double per = (x[7] > 0 ? x[7] : 1) * (double)r->m; /* per micro-batch */
    ops[i] = (MplProfileOp){.key = job->opids[i].key, .label = job->opids[i].label, .rank = pr,
                            .fwd_s = t[0] / per, .bwd_b_s = t[1] / per, .bwd_w_s = t[2] / per};
  }
}

int measure_write(MplRun *r, MplErr *err) {
  if (!r->profiling) return MPL_OK;
  if (r->ranks[r->me].stats.steps == 0)
    return mpl_errf(err, "--profile %s: no step was trained, so nothing was measured (a --steps past the checkpoint's step trains)",
                    r->opts.profile_path);
  size_t n = (size_t)r->job->nopids * 3 + RANK_EXTRA;
  double **bufs = mpl_calloc((size_t)r->pp, sizeof *bufs);
  MplProfileRank *ranks = mpl_calloc((size_t)r->pp, sizeof *ranks);
  MplProfileOp *ops = mpl_calloc((size_t)r->job->nopids + 1, sizeof *ops);
  int st = bufs && ranks && ops ? MPL_OK : mpl_errf(err, "out of memory");
  for (int pr = 0; st == MPL_OK && pr < r->pp; pr++)
    if (!(bufs[pr] = mpl_calloc(n, sizeof(double)))) st = mpl_errf(err, "out of memory");
  if (st == MPL_OK) st = gather_ranks(r, bufs, n, err);
  if (st == MPL_OK && r->lead) {
    MplProfile p;
    fill_profile(r, bufs, &p, ranks, ops);
    st = mpl_profile_write(&p, r->opts.profile_path, err);
  }
  for (int pr = 0; bufs && pr < r->pp; pr++) mpl_free(bufs[pr]);
  mpl_free(bufs), mpl_free(ranks), mpl_free(ops);
  return st;
}
