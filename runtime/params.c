/*
 * params.c — the params, their gradients and optimizer state whole: gathered from the
 * parts the ranks hold (tp parts joined, ZeRO-1 chunks joined, under MPI sent to world
 * rank 0) and scattered back to them. checkpoint.c and the tests use these; nothing here
 * writes files.
 *
 * Invariant: a tensor is the same whole whatever the mesh, so checkpoints move between
 * meshes, with ZeRO-1 or without.
 */
#include "rank.h"

#include <math.h>
#include <string.h>

int64_t mpl_run_step(const MplRun *r) { return r->step; }
int64_t mpl_run_steps_trained(const MplRun *r) { return r->step - r->first_step; }
int mpl_run_stopped(const MplRun *r) { return r->stopped; }
double mpl_run_last_loss(const MplRun *r) { return r->last_loss; }
double mpl_run_val_loss(const MplRun *r) { return r->val_loss; }
const Job *mpl_run_job(const MplRun *r) { return r->job; }
const MplRunOpts *mpl_run_opts(const MplRun *r) { return &r->opts; }
bool mpl_run_is_lead(const MplRun *r) { return r->lead; }

const MplRankStats *mpl_run_rank_stats(const MplRun *r, int rank) {
  return rank >= 0 && rank < r->nworld ? &r->ranks[rank].stats : NULL;
}

const JobParam *mpl_run_param(const MplRun *r, int p) { return &r->wparams[p]; }

/* Whole tensor `out` from the parts that world ranks (replica 0, every tp index, pipeline
 * rank owner[p]) hold at part(rc); a param that is not split is copied from tp index 0.
 * chunked (ZeRO-1's optimizer state and gradients): each part is joined from the chunks of
 * every replica instead, chunk d (dp_chunk) from replica d, whose part(rc) points at it. */
typedef const float *(*PartOf)(const RankCtx *rc, int p, int slot);

static const float *part_param(const RankCtx *rc, int p, int slot) { return vptr(rc, rc->run->job->params[p].value, 0); }
static const float *part_optim(const RankCtx *rc, int p, int slot) { return rc->opt[slot][p]; }
static const float *part_grad(const RankCtx *rc, int p, int slot) {
  int64_t lo = 0, n;
  if (rc->run->chunked[p]) mpl_dp_chunk(rc->run->job->params[p].numel, rc->run->dp, rc->dpi, &lo, &n);
  return rc->grad[p] ? rc->grad[p] + lo : NULL;
}

/* Under MPI, the n elements of part t that replica d's rank rc holds at src come from
 * another process: the holder sends them to world rank 0 (from device memory through a
 * host copy), which receives them at dst. */
static int gather_part_mpi(const MplRun *r, int p, int t, int d, const RankCtx *rc, const float *src, float *dst,
                           int64_t n, MplErr *err) {
  const JobParam *jp = &r->job->params[p];
  MplComm *c = r->mpi;
  size_t bytes = (size_t)n * 4;
  uint64_t tag = TAG_MAIN(MAIN_PART, ((uint64_t)p << 16) | ((uint64_t)t << 8) | (uint64_t)d);
  if (r->me == rc->wrank) {
    if (!src) return mpl_errf(err, "%s: not held where expected", jp->name);
    float *host = rc->dev.ops->device_memory ? mpl_malloc(bytes + 4) : NULL;
    if (rc->dev.ops->device_memory && !host) return mpl_errf(err, "out of memory");
    int st = host ? rc->dev.ops->copy_to_host((MplDevice *)&rc->dev, host, src, bytes, err) : MPL_OK;
    if (st == MPL_OK && c->ops->send(c, 0, tag, host ? host : src, bytes) != MPL_OK)
      st = mpl_errf(err, "%s: %s", jp->name, c->err.msg);
    mpl_free(host);
    return st;
  }
  if (r->me != 0) return MPL_OK;
  if (c->ops->recv(c, rc->wrank, tag, dst, bytes) != MPL_OK) return mpl_errf(err, "%s: %s", jp->name, c->err.msg);
  return MPL_OK;
}

static int gather_whole(const MplRun *r, int p, int slot, PartOf part, bool chunked, float *out, MplErr *err) {
  const JobParam *jp = &r->job->params[p], *wp = &r->wparams[p];
  bool split = jp->split_dim >= 0, root = !r->mpi || r->me == 0; /* root: the process that joins */
  float *host = split ? mpl_malloc((size_t)jp->numel * 4 + 4) : NULL; /* a split part, joined on the host */
  if (split && !host) return mpl_errf(err, "out of memory");
  float *dst = split ? host : out;
  int st = MPL_OK;
  for (int t = 0; t < (split ? r->tp : 1) && st == MPL_OK; t++) {
    for (int d = 0; d < (chunked ? r->dp : 1) && st == MPL_OK; d++) {
      int64_t lo = 0, n = jp->numel;
      if (chunked) mpl_dp_chunk(jp->numel, r->dp, d, &lo, &n);
      const RankCtx *rc = &r->ranks[world_of(r, d, t, r->owner[p])];
      const float *src = rc->live ? part(rc, p, slot) : NULL;
      if (r->mpi && rc->wrank != 0) st = gather_part_mpi(r, p, t, d, rc, src, dst + lo, n, err);
      else if (!root) continue; /* world rank 0's own part */
      else if (!src) st = mpl_errf(err, "%s: not held where expected", jp->name);
      else st = rc->dev.ops->copy_to_host((MplDevice *)&rc->dev, dst + lo, src, (size_t)n * 4, err);
    }
    if (st == MPL_OK && split && root)
      mpl_shard_copy(out, host, wp->dims, wp->rank, wp->split_dim, wp->groups, r->tp, t, 4, false);
  }
  mpl_free(host);
  return st;
}

int mpl_run_get_param(const MplRun *r, int p, float *out, MplErr *err) { return gather_whole(r, p, 0, part_param, false, out, err); }

/* The summed gradient of param p from the last step (after clipping, if any); under ZeRO-1
 * each replica has summed its own chunk alone. */
int mpl_run_get_grad(const MplRun *r, int p, float *out, MplErr *err) {
  if (r->mpi) return mpl_errf(err, "gradients are not gathered under MPI");
  if (!r->ranks[r->owner[p]].grad[p]) return mpl_errf(err, "no gradient for %s", r->job->params[p].name);
  return gather_whole(r, p, 0, part_grad, r->chunked[p], out, err);
}

/* Writes whole tensor `in` into every live rank's part: its param, or (optim) its
 * optimizer slot, which under ZeRO-1 holds its replica's chunk of the part alone. */
static int scatter_whole(MplRun *r, int p, const float *in, int slot, bool optim, MplErr *err) {
  const JobParam *jp = &r->job->params[p], *wp = &r->wparams[p];
  bool split = jp->split_dim >= 0;
  float *host = split ? mpl_malloc((size_t)jp->numel * 4 + 4) : NULL; /* a split part, cut on the host */
  if (split && !host) return mpl_errf(err, "out of memory");
  int st = MPL_OK, cut = -1; /* the tp index whose part is in host */
  for (int i = 0; i < r->nworld && st == MPL_OK; i++) {
    RankCtx *rc = &r->ranks[i];
    if (!rc->live) continue; /* another process's rank */
    float *dst = optim ? rc->opt[slot][p] : vptr(rc, jp->value, 0);
    if (!dst) continue;
    int64_t lo = 0, n = jp->numel;
    if (optim && r->chunked[p]) mpl_dp_chunk(jp->numel, r->dp, rc->dpi, &lo, &n);
    if (split && cut != rc->tpi) {
      mpl_shard_copy((void *)in, host, wp->dims, wp->rank, wp->split_dim, wp->groups, r->tp, rc->tpi, 4, true);
      cut = rc->tpi;
    }
    const float *src = (split ? host : in) + lo;
    st = rc->dev.ops->copy_from_host(&rc->dev, dst, src, (size_t)n * 4, err);
  }
  mpl_free(host);
  return st;
}

int mpl_param_check_values(const JobParam *jp, const float *in, MplErr *err) {
  bool f16 = jp->type == JDT_F16, bf16 = jp->type == JDT_BF16;
  for (int64_t i = 0; i < jp->numel; i++) {
    float v = in[i];
    if (!isfinite(v))
      return mpl_errf(err, "param %s: its element %lld is %s", jp->name, (long long)i, isnan(v) ? "a NaN" : "infinite");
    if (f16 ? fabsf(v) >= 65520.0f : bf16 && isinf(mpl_bf16_round(v)))
      return mpl_errf(err, "param %s is %s, and its element %lld is %g: infinite in %s (the largest finite value is %s)",
                      jp->name, f16 ? "f16" : "bf16", (long long)i, (double)v, f16 ? "f16" : "bf16",
                      f16 ? "65504" : "3.3895e38");
  }
  return MPL_OK;
}

int mpl_run_set_param(MplRun *r, int p, const float *in, MplErr *err) { return scatter_whole(r, p, in, 0, false, err); }

int mpl_run_optim_slots(const MplRun *r, const char *const **names) {
  static const char *const adamw[] = {"exp_avg", "exp_avg_sq"}, *const sgd[] = {"momentum"};
  if (r->job->train.optimizer == OPT_ADAMW) {
    *names = adamw;
    return 2;
  }
  *names = sgd;
  return mpl_optim_slots(&r->job->train);
}

/* Optimizer state is whole and keyed by global name however it is split (tp parts, ZeRO-1
 * chunks), so a checkpoint resumes under any mesh, with ZeRO or without. */
int mpl_run_get_optim(const MplRun *r, int p, int slot, float *out, MplErr *err) {
  if (!r->updated[p]) { /* never updated (nothing reads it): its state is zeros */
    memset(out, 0, (size_t)r->wparams[p].numel * 4);
    return MPL_OK;
  }
  return gather_whole(r, p, slot, part_optim, r->chunked[p], out, err);
}

int mpl_run_set_optim(MplRun *r, int p, int slot, const float *in, MplErr *err) {
  return scatter_whole(r, p, in, slot, true, err);
}

int64_t mpl_run_data_pos(const MplRun *r) { return r->tokens ? mpl_loader_tell(&r->loader) : r->data_pos_kept; }
int64_t mpl_run_total_steps(const MplRun *r) { return r->total_steps; }
int64_t mpl_run_data_align(const MplRun *r) {
  if (r->tokens) return mpl_loader_align(&r->loader);
  return r->data_align_kept > 0 ? r->data_align_kept : r->B * r->m * r->dp * r->job->train.seq; /* no data opened */
}

void mpl_run_optim_restart(MplRun *r) { r->optim_fresh = true; }
float *mpl_run_write_buf(const MplRun *r) { return r->write_buf; }

int mpl_run_restore(MplRun *r, int64_t step, int64_t data_pos, int64_t data_align, MplErr *err) {
  if (step < 0) return mpl_errf(err, "bad step %lld", (long long)step);
  r->step = step;
  r->optim_fresh = step == 0;
  if (r->tokens && mpl_loader_seek(&r->loader, data_pos, data_align, err) != MPL_OK) {
    char why[sizeof err->msg];
    snprintf(why, sizeof why, "%s", err ? err->msg : "");
    return mpl_errf(err, "the checkpoint's data position does not fit this data (--data or the train block's file): is it "
                    "the file the checkpointed run read? %s", why);
  }
  if (r->tokens) return MPL_OK;
  r->data_pos_kept = data_pos; /* no data opened: kept for the next checkpoint */
  r->data_align_kept = data_align;
  return MPL_OK;
}
