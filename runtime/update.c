/*
 * update.c — the update phase, as mplc's compiler/update.c emitted it: each instruction
 * (job.h's JI_TIED_SEND ... JI_DP_ALLGATHER) run as written, nothing decided here.
 *
 * Every device runs the update through its own ops (accum_f32, sumsq_f64, scale_f32,
 * sgd, adamw, copy_device): gradients, their scratch sums and the optimizer state live
 * in the rank's device memory (one allocation, state_mem, carved at set-up from what the
 * rank's instructions need); only the per-param float64 sums of squares of the clipping
 * norm cross to the host. The CPU device's ops are optim.c's loops, so every device
 * computes the same bits. Runs of NORM_ADD, CLIP or UPDATE go to the device's multi-tensor
 * ops where it has them (upd_run_list).
 *
 * Invariants:
 *  - a param's gradient is the accumulator of its one use, or (GRAD_SUM) scratch holding
 *    the sum of its uses in use order, a remote use received from the rank that holds it;
 *  - sums over replicas and over the world are in ascending rank order (the
 *    communicators' contract), so dp, ZeRO-1 and every tp and pp layout give one result;
 *  - NORM_ALLREDUCE leaves every rank with the same norm; a non-finite norm stops the run
 *    before any param is touched.
 */
#include "rank.h"

#include <math.h>
#include <string.h>

/* The tag of a tied gradient (exec.c's pipeline tags use kind 1, TAG_MAIN 5). */
#define TAG_TIED(p, u) ((2ull << 60) | ((uint64_t)(p) << 24) | (uint64_t)(u))

static int use_rank(const Job *job, const JobParam *p, int u) { return job->stages[p->use_stage[u]].rank; }

/* This replica's chunk of param pi (the clipping norm's share, ZeRO-1's range). */
static void my_chunk(const RankCtx *rc, int pi, int64_t *lo, int64_t *len) {
  mpl_dp_chunk(rc->run->job->params[pi].numel, rc->run->dp, rc->dpi, lo, len);
}

/* The range an instruction with these flags acts on: the chunk (JF_CHUNK) or all of it. */
static void range_of(const RankCtx *rc, int pi, int flags, int64_t *lo, int64_t *len) {
  if (flags & JF_CHUNK) my_chunk(rc, pi, lo, len);
  else *lo = 0, *len = rc->run->job->params[pi].numel;
}

/* ---- gradients: tied uses, sums over uses and replicas -------------------------------- */

static int tied_send(RankCtx *rc, const JobIns *in, MplErr *err) {
  const JobParam *p = &rc->run->job->params[in->param];
  size_t bytes = (size_t)p->numel * 4;
  comm_count(rc, MPL_COMM_TIED_SEND, bytes);
  double t0 = trace_t(rc);
  if (rc->comm->ops->send(rc->comm, peer_of(rc, in->peer), TAG_TIED(in->param, in->use),
                          vptr(rc, p->use_value[in->use], 0), bytes) != MPL_OK)
    return rank_fail(rc, err, "tied gradient of %s: %s", p->name, rc->comm->err.msg);
  trace_comm(rc, "tied_send", t0);
  return MPL_OK;
}

/* The gradient of param pi: its uses in use order (remote ones received), in scratch; when
 * every use is on this rank, in use 0's accumulator itself (rc->grad[pi]), the same sums. */
static int grad_sum(RankCtx *rc, int pi, MplErr *err) {
  const Job *job = rc->run->job;
  const JobParam *p = &job->params[pi];
  size_t bytes = (size_t)p->numel * 4;
  float *g = rc->grad[pi];
  for (int u = 0; u < p->nuses; u++) {
    int ur = use_rank(job, p, u);
    float *src = vptr(rc, p->use_value[u], 0);
    if (ur != rc->rank) {
      src = u == 0 ? g : rc->tmp;
      comm_count(rc, MPL_COMM_TIED_RECV, bytes);
      double t0 = trace_t(rc);
      if (rc->comm->ops->recv(rc->comm, peer_of(rc, ur), TAG_TIED(pi, u), src, bytes) != MPL_OK)
        return rank_fail(rc, err, "tied gradient of %s: %s", p->name, rc->comm->err.msg);
      trace_comm(rc, "tied_recv", t0);
    }
    int st = u > 0 ? rc->dev.ops->accum_f32(&rc->dev, g, src, p->numel, err)
                   : src == g ? MPL_OK : rc->dev.ops->copy_device(&rc->dev, g, src, bytes, err);
    if (st != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

static void dp_group(const RankCtx *rc, int *ranks) {
  MplRun *r = rc->run;
  for (int d = 0; d < r->dp; d++) ranks[d] = world_of(r, d, rc->tpi, rc->rank);
}

/* A collective over the replicas of this rank's pipeline rank and tp index, on param pi:
 * DP_ALLREDUCE and ZeRO-1's DP_REDUCE_SCATTER of its gradient (replica d ends with the
 * sum of chunk d, mpl_dp_chunk being the communicator's chunk rule), ZeRO-1's
 * DP_ALLGATHER of the updated param; sums in replica order. */
static int dp_collective(RankCtx *rc, int kind, int pi, MplErr *err) {
  MplRun *r = rc->run;
  const JobParam *p = &r->job->params[pi];
  const MplCommOps *c = rc->comm->ops;
  int *ranks = rc->group_ranks, st, ck = kind == JI_DP_ALLREDUCE ? MPL_COMM_DP_ALLREDUCE
                         : kind == JI_DP_REDUCE_SCATTER ? MPL_COMM_DP_REDUCE_SCATTER : MPL_COMM_DP_ALLGATHER;
  dp_group(rc, ranks);
  comm_count(rc, ck, (size_t)p->numel * 4);
  double t0 = trace_t(rc);
  size_t n = (size_t)p->numel;
  if (kind == JI_DP_ALLREDUCE) st = c->allreduce_sum_f32(rc->comm, ranks, r->dp, rc->grad[pi], n);
  else if (kind == JI_DP_REDUCE_SCATTER) st = c->reduce_scatter_sum_f32(rc->comm, ranks, r->dp, rc->grad[pi], n);
  else st = c->allgather(rc->comm, ranks, r->dp, vptr(rc, p->value, 0), n, 4);
  if (st != MPL_OK) return rank_fail(rc, err, "%s of %s over the replicas: %s", job_ins_name(kind), p->name, rc->comm->err.msg);
  trace_comm(rc, mpl_comm_kind_name(ck), t0);
  return MPL_OK;
}

/* ---- what NORM_ADD, CLIP and UPDATE act on ------------------------------------------------ */

/* The range of param in->param that instruction in acts on here, as a tensor of the
 * optimizer ops (device.h); false when it acts on nothing here (an empty range; NORM_ADD of
 * a param that tp index 0 alone adds). A NORM_ADD that acts marks its sum as added. */
static bool opt_tensor(RankCtx *rc, const JobIns *in, MplOptTensor *t) {
  int pi = in->param;
  int64_t lo, n;
  if (in->kind == JI_NORM_ADD) {
    if ((in->flags & JF_TP0) && rc->tpi != 0) return false;
    my_chunk(rc, pi, &lo, &n);
    if (n == 0) return false;
    rc->norm_added[pi] = true;
    *t = (MplOptTensor){.g = rc->grad[pi] + lo, .out = &rc->norm_dev[pi], .n = n};
    return true;
  }
  range_of(rc, pi, in->flags, &lo, &n);
  if (n == 0) return false;
  const JobParam *p = &rc->run->job->params[pi];
  *t = (MplOptTensor){.g = rc->grad[pi] + lo, .n = n};
  if (in->kind == JI_UPDATE) {
    t->p = (float *)vptr(rc, p->value, 0) + lo;
    t->m = rc->opt[0][pi], t->v = rc->opt[1][pi];
    t->weight_decay = p->decay ? rc->run->job->train.weight_decay : 0.0;
  }
  return true;
}

/* ---- the clipping norm ------------------------------------------------------------------ */

/* The squares of this replica's chunk of param pi's gradient, on the device, into
 * norm_dev[pi]; a param that is whole under tp is added by tp index 0 alone (JF_TP0). */
static int norm_add(RankCtx *rc, const JobIns *in, MplErr *err) {
  MplOptTensor t;
  if (!opt_tensor(rc, in, &t)) return MPL_OK; /* adds nothing: norm_allreduce counts it as 0 */
  return rc->dev.ops->sumsq_f64(&rc->dev, t.g, t.n, t.out, err);
}

/* The per-param sums of every world rank, all-reduced in world-rank order, then summed
 * over params in name order: the global norm, and the coefficient CLIP applies. */
static int norm_allreduce(RankCtx *rc, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  int np = r->job->nparams;
  size_t bytes = sizeof(double) * (size_t)np;
  double *sums = rc->norm_buf;
  if (np && rc->dev.ops->copy_to_host(&rc->dev, sums, rc->norm_dev, bytes, err) != MPL_OK) return MPL_ERR;
  for (int pi = 0; pi < np; pi++) {
    if (!rc->norm_added[pi]) sums[pi] = 0;
    rc->norm_added[pi] = false;
  }
  for (int w = 0; w < r->nworld; w++) rc->world_ranks[w] = w;
  comm_count(rc, MPL_COMM_NORM_ALLREDUCE, bytes);
  double t0 = trace_t(rc);
  if (np && rc->comm->ops->allreduce_sum_f64(rc->comm, rc->world_ranks, r->nworld, sums, (size_t)np) != MPL_OK)
    return rank_fail(rc, err, "gradient norm: %s", rc->comm->err.msg);
  trace_comm(rc, "norm_allreduce", t0);
  double s = 0;
  for (int pi = 0; pi < np; pi++) s += sums[pi];
  double norm = sqrt(s);
  if (!isfinite(norm))
    return rank_fail(rc, err, "step %lld: the gradient norm is %s: training stopped before the update, nothing more "
                     "is written (%s)", (long long)step + 1, isnan(norm) ? "nan" : "inf", mpl_nonfinite_hint(r, step));
  rc->clip_coef = mpl_clip_coef(norm, r->job->train.grad_clip);
  return MPL_OK;
}

static int clip(RankCtx *rc, const JobIns *in, MplErr *err) {
  MplOptTensor t;
  if (rc->clip_coef >= 1.0 || !opt_tensor(rc, in, &t)) return MPL_OK;
  return rc->dev.ops->scale_f32(&rc->dev, t.g, t.n, (float)rc->clip_coef, err);
}

/* ---- the update ------------------------------------------------------------------------ */

static int update(RankCtx *rc, const JobIns *in, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  const TrainConfig *c = &r->job->train;
  MplOptTensor t;
  if (!opt_tensor(rc, in, &t)) return MPL_OK;
  double lr = mpl_lr_at(c, r->total_steps, step);
  if (c->optimizer == OPT_ADAMW)
    return rc->dev.ops->adamw(&rc->dev, t.p, t.g, t.m, t.v, t.n, lr, c->beta1, c->beta2, c->eps, t.weight_decay, step + 1,
                              err);
  return rc->dev.ops->sgd(&rc->dev, t.p, t.g, t.m, t.n, lr, c->momentum, r->optim_fresh, err);
}

/* ---- runs of one instruction kind as one multi-tensor op ---------------------------------
 * NORM_ADD, CLIP and UPDATE come in runs of one kind (compiler/update.c emits each kind for
 * every param, in param order). When the device has the kind's list op, a run of up to
 * MPL_OPT_LIST of them is one call: on a GPU one or two launches, not one or two a param.
 * Each tensor's result is the single op's bits, so a run's order does not matter. */

/* The list op of kind's instructions, if the device has one (UPDATE: the optimizer's). */
static bool has_list_op(const RankCtx *rc, int kind) {
  const MplDeviceOps *o = rc->dev.ops;
  switch (kind) {
  case JI_NORM_ADD: return o->sumsq_f64_list != NULL;
  case JI_CLIP: return o->scale_f32_list != NULL;
  case JI_UPDATE: return rc->run->job->train.optimizer == OPT_ADAMW ? o->adamw_list != NULL : o->sgd_list != NULL;
  default: return false;
  }
}

int upd_list_len(const RankCtx *rc, const JobIns *in, int avail) {
  if (!has_list_op(rc, in->kind)) return 1;
  int k = 1;
  while (k < avail && k < MPL_OPT_LIST && in[k].kind == in[0].kind) k++;
  return k;
}

int upd_run_list(RankCtx *rc, const JobIns *in, int k, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  const TrainConfig *c = &r->job->train;
  MplOptTensor t[MPL_OPT_LIST];
  int nt = 0;
  if (in[0].kind == JI_CLIP && rc->clip_coef >= 1.0) return MPL_OK;
  for (int i = 0; i < k && i < MPL_OPT_LIST; i++) nt += opt_tensor(rc, &in[i], &t[nt]);
  if (nt == 0) return MPL_OK;
  const MplDeviceOps *o = rc->dev.ops;
  switch (in[0].kind) {
  case JI_NORM_ADD: return o->sumsq_f64_list(&rc->dev, t, nt, err);
  case JI_CLIP: return o->scale_f32_list(&rc->dev, t, nt, (float)rc->clip_coef, err);
  default:
    if (c->optimizer != OPT_ADAMW)
      return o->sgd_list(&rc->dev, t, nt, mpl_lr_at(c, r->total_steps, step), c->momentum, r->optim_fresh, err);
    return o->adamw_list(&rc->dev, t, nt, mpl_lr_at(c, r->total_steps, step), c->beta1, c->beta2, c->eps, step + 1,
                         err);
  }
}

int upd_run(RankCtx *rc, const JobIns *in, int64_t step, MplErr *err) {
  switch (in->kind) {
  case JI_TIED_SEND: return tied_send(rc, in, err);
  case JI_GRAD_SUM: return grad_sum(rc, in->param, err);
  case JI_DP_ALLREDUCE:
  case JI_DP_REDUCE_SCATTER:
  case JI_DP_ALLGATHER: return dp_collective(rc, in->kind, in->param, err);
  case JI_NORM_ADD: return norm_add(rc, in, err);
  case JI_NORM_ALLREDUCE: return norm_allreduce(rc, step, err);
  case JI_CLIP: return clip(rc, in, err);
  case JI_UPDATE: return update(rc, in, step, err);
  default: return rank_fail(rc, err, "unknown instruction kind %d", in->kind);
  }
}

/* ---- set-up ------------------------------------------------------------------------------ */

/* Bytes rounded up to keep every carved buffer 256-byte aligned. */
static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Are all of param p's uses on rank r (so that its uses sum in place into use 0's accumulator,
 * with no scratch and nothing received)? compiler/update.c's upd_local_uses asks the same. */
static bool local_uses(const Job *job, const JobParam *p, int r) {
  for (int u = 0; u < p->nuses; u++)
    if (use_rank(job, p, u) != r) return false;
  return true;
}

/* What the rank's update instructions need, per param: a scratch sum (GRAD_SUM of a param
 * with a use on another rank), the optimizer state's length (UPDATE), and the largest
 * receive buffer (a use after the first received from another rank). */
typedef struct Needs {
  bool *sum;          /* [nparams] */
  int64_t *state;     /* [nparams] elements per slot, -1: none */
  int64_t tmp;
} Needs;

static int find_needs(const RankCtx *rc, Needs *nd, MplErr *err) {
  const Job *job = rc->run->job;
  const JobRank *jr = &job->ranks[rc->rank];
  int64_t lo;
  for (int pi = 0; pi < job->nparams; pi++) nd->state[pi] = -1;
  for (int i = 0; i < jr->nins; i++) {
    const JobIns *in = &jr->ins[i];
    if (!job_ins_is_update(in->kind) || in->param < 0) continue;
    const JobParam *p = &job->params[in->param];
    if (!rc->holds[in->param]) return mpl_errf(err, "rank %d: %s of %s, which it does not hold", rc->rank, job_ins_name(in->kind), p->name);
    if (in->kind == JI_GRAD_SUM && !local_uses(job, p, rc->rank)) {
      nd->sum[in->param] = true;
      for (int u = 1; u < p->nuses; u++)
        if (use_rank(job, p, u) != rc->rank && p->numel > nd->tmp) nd->tmp = p->numel;
    }
    if (in->kind == JI_UPDATE) range_of(rc, in->param, in->flags, &lo, &nd->state[in->param]);
  }
  return MPL_OK;
}

/* The gradient of a param without a scratch sum is its first use's accumulator, on this
 * rank: its one use's, or (GRAD_SUM, every use here) the one the others are added to. */
static int own_accumulator(RankCtx *rc, int pi, MplErr *err) {
  const Job *job = rc->run->job;
  const JobParam *p = &job->params[pi];
  if (!local_uses(job, p, rc->rank))
    return mpl_errf(err, "param %s: %d uses and no grad_sum on rank %d", p->name, p->nuses, rc->rank);
  rc->grad[pi] = vptr(rc, p->use_value[0], 0);
  return MPL_OK;
}

/* Carves state_mem (pass 0 measures, pass 1 assigns): scratch sums, optimizer slots,
 * the tied receive buffer, the sums of squares. */
static size_t carve(RankCtx *rc, const Needs *nd, int nslots, uint8_t *base) {
  const Job *job = rc->run->job;
  size_t at = 0;
  for (int pi = 0; pi < job->nparams; pi++) {
    if (nd->sum[pi]) {
      if (base) rc->grad[pi] = (float *)(base + at);
      at += align256((size_t)job->params[pi].numel * 4 + 4);
    }
    for (int k = 0; k < nslots && nd->state[pi] >= 0; k++) {
      if (base) rc->opt[k][pi] = (float *)(base + at);
      at += align256((size_t)nd->state[pi] * 4 + 4);
    }
  }
  if (base) rc->tmp = (float *)(base + at);
  at += align256((size_t)nd->tmp * 4 + 4);
  if (base) rc->norm_dev = (double *)(base + at);
  return at + align256(sizeof(double) * ((size_t)job->nparams + 1));
}

int upd_init_rank(MplRun *r, RankCtx *rc, MplErr *err) {
  const Job *job = r->job;
  const MplDeviceOps *o = rc->dev.ops;
  if (!o->accum_f32 || !o->copy_device || !o->sumsq_f64 || !o->scale_f32 || !o->sgd || !o->adamw)
    return mpl_errf(err, "the %s device lacks the optimizer operations", o->name);
  int nslots = mpl_optim_slots(&job->train);
  Needs nd = {.sum = mpl_calloc((size_t)job->nparams + 1, 1), .state = mpl_calloc((size_t)job->nparams + 1, 8)};
  int st = nd.sum && nd.state ? find_needs(rc, &nd, err) : mpl_errf(err, "out of memory");
  size_t total = st == MPL_OK ? carve(rc, &nd, nslots, NULL) : 0;
  if (st == MPL_OK) st = o->arena_alloc(&rc->dev, total, &rc->state_mem, err);
  if (st == MPL_OK && !o->arena_zeroed) st = o->zero(&rc->dev, rc->state_mem, total, err);
  if (st == MPL_OK) carve(rc, &nd, nslots, rc->state_mem);
  if (st == MPL_OK) rc->stats.state_bytes = total;
  rc->stats.update_elems = 0;
  for (int pi = 0; pi < job->nparams && st == MPL_OK; pi++)
    if (nd.state[pi] > 0) rc->stats.update_elems += nd.state[pi];
  for (int pi = 0; pi < job->nparams && st == MPL_OK; pi++)
    if (rc->holds[pi] && job->params[pi].nuses > 0 && !nd.sum[pi]) st = own_accumulator(rc, pi, err);
  mpl_free(nd.sum);
  mpl_free(nd.state);
  return st;
}

void upd_free_rank(RankCtx *rc) {
  if (rc->state_mem) rc->dev.ops->arena_free(&rc->dev, rc->state_mem);
  rc->state_mem = NULL;
}
