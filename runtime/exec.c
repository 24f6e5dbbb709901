/*
 * exec.c — the run: one executor thread per pipeline rank walking its instruction
 * stream (fwd, bwd_b, bwd_w, send, recv, allreduce_tied, optimizer_step) step after
 * step, with a device backend for memory and compute and the in-process communicator
 * for messages; the main thread drives the steps (progress, metrics, checkpoints).
 *
 * The world is dp x tp x pp ranks: world rank w = (replica * tp + tp_index) * pp + pipeline
 * rank. The ranks of one replica and tp index form a pipeline (they exchange
 * activations); the tp ranks of one pipeline rank run the same programs on their parts
 * of the split values (the collectives of the job's JS_COMM steps); the replicas run on
 * different rows of the batch and all-reduce their gradients before the update (ZeRO-1:
 * reduce-scatter, each updates its chunk, all-gather; see "data parallelism and ZeRO-1").
 *
 * Invariants:
 *  - each rank owns one arena (JobRank.arena_bytes); value v of micro-batch j lives at
 *    offset[v*m + j]; params and gradient accumulators at their slot-0 offset;
 *  - nothing depends on timing: gradients of one use are summed by the programs in
 *    micro-batch order, a param's uses are summed in use order (remote ones received
 *    first), the clipping norm is summed in param-name order from per-param float64
 *    sums computed by the param's owner (its lowest holding rank; with dp > 1 each
 *    replica's owner over its chunk, with ZeRO-1 or without); so the same job, seed and
 *    --threads give the same bits whatever the schedule, and ZeRO-1 those of zero = 0;
 *  - a rank that fails records its message (the first one wins) and aborts the
 *    communicator, so every rank blocked in a recv wakes with an error; the main thread
 *    waits for every rank to finish the step before it looks at the result: no hang;
 *  - between steps the rank threads wait, so the main thread may read and write any
 *    rank's arena (checkpoints, --init, sampling);
 *  - on a device whose memory the host cannot touch (ops->device_memory: cuda) every
 *    host access goes through copy_to_host / copy_from_host, losses are read at the end
 *    of the step, each rank's step ends with ops->sync, and messages go through the cuda
 *    communicator (comm_nccl.c: NCCL, or device copies on the comm stream; under MPI,
 *    NCCL or host staging over the MPI communicator) instead of the local one;
 *  - such a device with the optimizer ops (ops->adamw ...: cuda) keeps gradients and
 *    optimizer state in device memory (one allocation per rank, state_mem) and sums uses,
 *    squares, clips and updates there, in the same order as the host path: only the
 *    nparams float64 sums of squares cross to the host (with grad_clip); without them
 *    (a stand-in device in the tests) gradients are summed, clipped and applied on the
 *    host (device -> host, update, host -> device);
 *  - under mpirun (opts.comm: comm_mpi.c) this process runs world rank comm->rank alone,
 *    on its main thread (no rank threads; only this thread calls MPI); the other ranks'
 *    contexts are shadows (ids, holds[], loss slots: live is false). Whatever the main
 *    thread read from other ranks' memory goes through messages to world rank 0 (TAG_MAIN):
 *    the step's losses, the parts of params and optimizer state (mpl_run_get_param/_optim,
 *    collective: every process calls them in the same order), the stats of the report
 *    and the trace events; rank 0 alone prints and writes files. Each process initialises
 *    its params from the seed and reads --init/--resume files itself. The messages and the
 *    all-reduce order are those of the threads run, so the bits are the same.
 */
#include "rank.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "mpl_rng.h"

void trace_comm(RankCtx *rc, const char *name, double t0) {
  MplRun *r = rc->run;
  if (r->tracing && name) mpl_trace_event(&r->trace, rc->wrank, name, "comm", t0, mpl_trace_now(&r->trace) - t0);
}

void mpl_run_opts_default(MplRunOpts *o) {
  *o = (MplRunOpts){.device_kind = "cpu", .threads = 1, .steps = -1, .fail_rank = -1};
}

/* ---- the step's instructions ----------------------------------------------------- */

int rank_fail(RankCtx *rc, MplErr *err, const char *fmt, ...) {
  char buf[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (rc->run->nworld > rc->run->pp) return mpl_errf(err, "rank %d (pipeline rank %d, tp %d, replica %d): %s", rc->wrank, rc->rank, rc->tpi, rc->dpi, buf);
  return mpl_errf(err, "rank %d: %s", rc->rank, buf);
}

void *need_ptr(RankCtx *rc, int v, int mb, int stage, MplErr *err) {
  void *p = vptr(rc, v, mb);
  if (!p) rank_fail(rc, err, "stage %d: value %d (micro-batch %d) has no buffer in this rank's arena", stage, v, mb);
  return p;
}

static int run_kernel_step(RankCtx *rc, const JobStep *s, int stage, int mb, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  bool gpu = rc->dev.ops->launch != NULL;
  if (s->kernel < 0 || s->kernel >= r->job->kernels.nkernels || (!gpu && !r->kfn[s->kernel]))
    return rank_fail(rc, err, "stage %d: kernel %d is not loaded", stage, s->kernel);
  if (s->nargs > rc->argv_cap) {
    mpl_free(rc->argv);
    rc->argv = mpl_malloc(sizeof(void *) * (size_t)s->nargs);
    rc->argv_cap = rc->argv ? s->nargs : 0;
    if (!rc->argv) return rank_fail(rc, err, "out of memory");
  }
  int64_t work = 0;
  for (int i = 0; i < s->nargs; i++) {
    if (!(rc->argv[i] = need_ptr(rc, s->args[i], mb, stage, err))) return MPL_ERR;
    work += r->job->values[s->args[i]].numel;
  }
  int64_t scalars[3] = {(int64_t)r->job->train.seed, step, r->eval ? MPL_MB_EVAL : mb};
  if (gpu) return rc->dev.ops->launch(&rc->dev, s->kernel, rc->argv, s->nargs, scalars, s->n_outer, err);
  return rc->dev.ops->kernel(&rc->dev, r->kfn[s->kernel], rc->argv, scalars, s->n_outer, work, err);
}

/* ---- tensor parallelism: parts of split values --------------------------------------- */

/* Copies between a whole value and this tp rank's part of it, split on `axis` in `groups`
 * equal groups, each cut in tp pieces: part index l of the axis is whole index
 * q*G + tpi*(G/tp) + c with G = D/groups, q = l/(G/tp), c = l%(G/tp). */
void mpl_shard_copy(void *whole, void *part, const int64_t *dims, int rank, int axis, int groups, int tp, int tpi,
                    size_t elem, bool to_part) {
  int64_t outer = 1, inner = 1, D = dims[axis];
  for (int i = 0; i < axis; i++) outer *= dims[i];
  for (int i = axis + 1; i < rank; i++) inner *= dims[i];
  int64_t G = D / groups, chunk = G / tp, L = D / tp;
  size_t row = (size_t)inner * elem;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t l = 0; l < L; l++) {
      int64_t q = l / chunk, c = l % chunk, gk = q * G + (int64_t)tpi * chunk + c;
      uint8_t *w = (uint8_t *)whole + ((size_t)(o * D + gk)) * row, *pt = (uint8_t *)part + ((size_t)(o * L + l)) * row;
      if (to_part) memcpy(pt, w, row);
      else memcpy(w, pt, row);
    }
}

static int tp_group(const RankCtx *rc, int *ranks) {
  for (int t = 0; t < rc->run->tp; t++) ranks[t] = world_of(rc->run, rc->dpi, t, rc->rank);
  return rc->run->tp;
}

/* mpl_shard_copy through the device's copy_2d (host memory on cpu): the part's rows of
 * every (outer, group) pair are one run of chunk rows, so the copy is one 2-D copy of
 * outer*groups runs. */
static int shard_copy_dev(RankCtx *rc, void *whole, void *part, const int64_t *dims, int rank, int axis, int groups,
                          int tp, int tpi, size_t elem, bool to_part, MplErr *err) {
  int64_t outer = 1, inner = 1, D = dims[axis];
  for (int i = 0; i < axis; i++) outer *= dims[i];
  for (int i = axis + 1; i < rank; i++) inner *= dims[i];
  int64_t G = D / groups, chunk = G / tp;
  size_t row = (size_t)inner * elem, run = (size_t)chunk * row, wpitch = (size_t)G * row;
  uint8_t *w = (uint8_t *)whole + (size_t)tpi * run;
  if (!rc->dev.ops->copy_2d) return rank_fail(rc, err, "tp collectives: the %s device cannot copy parts", rc->dev.ops->name);
  if (to_part) return rc->dev.ops->copy_2d(&rc->dev, part, run, w, wpitch, run, (size_t)(outer * groups), err);
  return rc->dev.ops->copy_2d(&rc->dev, w, wpitch, part, run, run, (size_t)(outer * groups), err);
}

/* JS_COMM: args {out, in}, through the device's copies (host memory on cpu). */
static int run_collective(RankCtx *rc, const JobStep *s, int stage, int mb, MplErr *err) {
  const Job *job = rc->run->job;
  if (s->nargs != 2) return rank_fail(rc, err, "stage %d: collective with %d operands", stage, s->nargs);
  void *out = need_ptr(rc, s->args[0], mb, stage, err), *in = out ? need_ptr(rc, s->args[1], mb, stage, err) : NULL;
  if (!in) return MPL_ERR;
  size_t payload = value_bytes(job, s->args[0]), in_bytes = value_bytes(job, s->args[1]);
  comm_count(rc, mpl_comm_kind_of_jc(s->comm), payload > in_bytes ? payload : in_bytes);
  const JobValue *vo = &job->values[s->args[0]], *vi = &job->values[s->args[1]];
  int ranks[64];
  if (rc->run->tp > 64) return rank_fail(rc, err, "tp = %d is more than this runtime supports (64)", rc->run->tp);
  int n = tp_group(rc, ranks);
  if (!rc->dev.ops->copy_device) return rank_fail(rc, err, "tp collectives: the %s device cannot copy", rc->dev.ops->name);
  switch (s->comm) {
  case JC_TP_ENTER: return out != in ? rc->dev.ops->copy_device(&rc->dev, out, in, in_bytes, err) : MPL_OK;
  case JC_TP_SLICE:
    return shard_copy_dev(rc, in, out, vi->dims, vi->rank, s->axis, s->groups, n, rc->tpi, dtype_bytes(vi->dtype), true, err);
  case JC_REDUCE_SCATTER: { /* the sum in scratch (the input stays as it was), then my part */
    if (vo->dtype != JDT_F32) return rank_fail(rc, err, "stage %d: collectives of non-f32 values are not supported", stage);
    void *sum = rc->rs_buf; /* sized at set-up for the rank's largest (rs_bytes) */
    if (rc->dev.ops->copy_device(&rc->dev, sum, in, in_bytes, err) != MPL_OK) return MPL_ERR;
    if (rc->comm->ops->allreduce_sum_f32(rc->comm, ranks, n, sum, (size_t)vi->numel) != MPL_OK)
      return rank_fail(rc, err, "stage %d: tp reduce-scatter: %s", stage, rc->comm->err.msg);
    return shard_copy_dev(rc, sum, out, vi->dims, vi->rank, s->axis, s->groups, n, rc->tpi, 4, true, err);
  }
  case JC_ALLREDUCE:
  case JC_ALLGATHER:
    if (vo->dtype != JDT_F32) return rank_fail(rc, err, "stage %d: collectives of non-f32 values are not supported", stage);
    if (s->comm == JC_ALLREDUCE) {
      if (out != in && rc->dev.ops->copy_device(&rc->dev, out, in, in_bytes, err) != MPL_OK) return MPL_ERR;
    } else { /* my part in place, zeros elsewhere, then summed */
      if (rc->dev.ops->zero(&rc->dev, out, payload, err) != MPL_OK ||
          shard_copy_dev(rc, out, in, vo->dims, vo->rank, s->axis, s->groups, n, rc->tpi, 4, false, err) != MPL_OK)
        return MPL_ERR;
    }
    if (rc->comm->ops->allreduce_sum_f32(rc->comm, ranks, n, out, (size_t)vo->numel) != MPL_OK)
      return rank_fail(rc, err, "stage %d: tp collective: %s", stage, rc->comm->err.msg);
    return MPL_OK;
  default: return rank_fail(rc, err, "stage %d: unknown collective %d", stage, s->comm);
  }
}

static int run_step_op(RankCtx *rc, const JobStep *s, int stage, int mb, int64_t step, MplErr *err) {
  const Job *job = rc->run->job;
  switch (s->kind) {
  case JS_KERNEL: return run_kernel_step(rc, s, stage, mb, step, err);
  case JS_GEMM: {
    float *a = need_ptr(rc, s->args[0], mb, stage, err), *b = a ? need_ptr(rc, s->args[1], mb, stage, err) : NULL;
    float *c = b ? need_ptr(rc, s->args[2], mb, stage, err) : NULL;
    /* batch 0's offsets (a broadcast product is one step per batch) apply on every device */
    return c ? rc->dev.ops->gemm(&rc->dev, s, a + s->off_a, b + s->off_b, c + s->off_c, err) : MPL_ERR;
  }
  case JS_ALIAS: return MPL_OK; /* the plan gave both values one buffer */
  case JS_ACCUM: {
    float *acc = need_ptr(rc, s->args[0], mb, stage, err), *src = acc ? need_ptr(rc, s->args[1], mb, stage, err) : NULL;
    if (!src) return MPL_ERR;
    int64_t n = job->values[s->args[0]].numel;
    if (job->values[s->args[1]].numel != n)
      return rank_fail(rc, err, "stage %d: accumulate of %lld elements into %lld", stage,
                       (long long)job->values[s->args[1]].numel, (long long)n);
    return rc->dev.ops->accum_f32(&rc->dev, acc, src, n, err);
  }
  case JS_COMM: {
    double t0 = trace_t(rc);
    int kind = mpl_comm_kind_of_jc(s->comm), st = run_collective(rc, s, stage, mb, err);
    trace_comm(rc, kind >= 0 ? mpl_comm_kind_name(kind) : NULL, t0);
    return st;
  }
  default: return rank_fail(rc, err, "stage %d: unknown step kind %d", stage, s->kind);
  }
}

static int run_prog(RankCtx *rc, int stage, int which, int mb, int64_t step, MplErr *err) {
  const JobProgram *pg = &rc->run->job->stages[stage].prog[which];
  for (int i = 0; i < pg->nsteps; i++) {
    const JobStep *s = &pg->steps[i];
    int need = s->kind == JS_GEMM ? 3 : (s->kind == JS_ACCUM || s->kind == JS_ALIAS) ? 2 : 0;
    if (s->nargs < need) return rank_fail(rc, err, "stage %d: step %d has %d arguments", stage, i, s->nargs);
    if (run_step_op(rc, s, stage, mb, step, err) != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

/* After FWD on the loss stage: the micro-batch's loss. */
static int read_loss(RankCtx *rc, int stage, int mb, MplErr *err) {
  int lv = rc->run->job->stages[stage].loss_value;
  if (lv < 0) return MPL_OK;
  float *p = need_ptr(rc, lv, mb, stage, err), l;
  if (!p || rc->dev.ops->copy_to_host(&rc->dev, &l, p, sizeof l, err) != MPL_OK) return MPL_ERR;
  rc->mb_loss[mb] = l;
  rc->mb_loss_set[mb] = true;
  return MPL_OK;
}

static int xfer_peer(const Job *job, const JobXfer *x, bool sending) {
  return job->stages[sending ? x->dst : x->src].rank;
}

static int run_xfer(RankCtx *rc, const JobIns *ins, bool sending, MplErr *err) {
  const Job *job = rc->run->job;
  const JobXfer *x = &job->xfers[ins->xfer];
  int pr = xfer_peer(job, x, sending);
  if (pr == rc->rank) return MPL_OK; /* both stages here: one buffer */
  int peer = peer_of(rc, pr);
  for (int i = 0; i < x->nvals; i++) {
    int v = x->vals[i];
    void *p = need_ptr(rc, v, ins->mb, sending ? x->src : x->dst, err);
    if (!p) return MPL_ERR;
    uint64_t tag = TAG_XFER(ins->xfer, ins->mb, i);
    int kind = sending ? MPL_COMM_PP_SEND : MPL_COMM_PP_RECV;
    comm_count(rc, kind, value_bytes(job, v));
    double t0 = trace_t(rc);
    int st = sending ? rc->comm->ops->send(rc->comm, peer, tag, p, value_bytes(job, v))
                     : rc->comm->ops->recv(rc->comm, peer, tag, p, value_bytes(job, v));
    trace_comm(rc, mpl_comm_kind_name(kind), t0);
    if (st != MPL_OK) return rank_fail(rc, err, "%s: %s", sending ? "send" : "recv", rc->comm->err.msg);
  }
  return MPL_OK;
}

/* ---- one training step of one rank ------------------------------------------------- */

static int fill_inputs(RankCtx *rc, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  const Job *job = r->job;
  for (int i = 0; i < job->ninputs; i++) {
    const JobInput *in = &job->inputs[i];
    if (!vptr(rc, in->value, 0)) continue;
    size_t bytes = value_bytes(job, in->value);
    for (int j = 0; j < r->m; j++) {
      void *dst = need_ptr(rc, in->value, j, -1, err);
      if (!dst) return MPL_ERR;
      if (r->tokens) {
        int32_t *buf = (int32_t *)rc->stage_buf;
        mpl_loader_rows(&r->loader, (rc->dpi * r->m + j) * r->B, r->B, r->role[i] == 0 ? buf : NULL,
                        r->role[i] == 1 ? buf : NULL);
      } else {
        mpl_synth_rows(&r->synth, i, step, r->B * r->m * r->dp, (rc->dpi * r->m + j) * r->B, r->B, rc->stage_buf);
      }
      if (rc->dev.ops->copy_from_host(&rc->dev, dst, rc->stage_buf, bytes, err) != MPL_OK) return MPL_ERR;
    }
  }
  return MPL_OK;
}

static int zero_grads(RankCtx *rc, MplErr *err) {
  const Job *job = rc->run->job;
  for (int v = 0; v < job->nvalues; v++) {
    if (job->values[v].kind != JV_GRAD || !vptr(rc, v, 0)) continue;
    if (rc->dev.ops->zero(&rc->dev, vptr(rc, v, 0), value_bytes(job, v), err) != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

/* The trace category of an instruction: the pipeline's by name, the update phase's one
 * "optimizer" slice (rank_step joins its instructions). */
static const char *ins_label(int kind) { return job_ins_is_update(kind) ? "optimizer" : job_ins_name(kind); }

static int run_ins(RankCtx *rc, const JobIns *ins, int64_t step, MplErr *err) {
  switch (ins->kind) {
  case JI_FWD:
    if (run_prog(rc, ins->stage, JP_FWD, ins->mb, step, err) != MPL_OK) return MPL_ERR;
    if (rc->dev.ops->device_memory) return MPL_OK; /* read at the end of the step */
    return read_loss(rc, ins->stage, ins->mb, err);
  case JI_BWD_B:
    if (run_prog(rc, ins->stage, JP_RECOMP, ins->mb, step, err) != MPL_OK) return MPL_ERR;
    return run_prog(rc, ins->stage, JP_BWD_B, ins->mb, step, err);
  case JI_BWD_W: return run_prog(rc, ins->stage, JP_BWD_W, ins->mb, step, err);
  case JI_SEND: return run_xfer(rc, ins, true, err);
  case JI_RECV: return run_xfer(rc, ins, false, err);
  default: return upd_run(rc, ins, step, err);
  }
}

/* Busy time: the passes and the update's arithmetic; messages and collectives wait. */
static bool ins_is_busy(int kind) {
  return kind == JI_FWD || kind == JI_BWD_B || kind == JI_BWD_W || kind == JI_NORM_ADD || kind == JI_CLIP ||
         kind == JI_UPDATE;
}

static void trace_ins(RankCtx *rc, const JobIns *ins, double t0_us, double t1_us) {
  char name[48];
  if (ins->kind <= JI_BWD_W)
    snprintf(name, sizeof name, "%s s%d mb%d", ins_label(ins->kind), ins->stage, ins->mb);
  else if (ins->kind == JI_SEND || ins->kind == JI_RECV)
    snprintf(name, sizeof name, "%s x%d mb%d", ins_label(ins->kind), ins->xfer, ins->mb);
  else
    snprintf(name, sizeof name, "%s", ins_label(ins->kind));
  mpl_trace_event(&rc->run->trace, rc->wrank, name, ins_label(ins->kind), t0_us, t1_us - t0_us);
}

/* Device memory: waits for the device, then reads the losses of the step's FWDs. */
static int end_step_on_device(RankCtx *rc, MplErr *err) {
  const JobRank *jr = &rc->run->job->ranks[rc->rank];
  if (rc->dev.ops->sync(&rc->dev, err) != MPL_OK) return MPL_ERR;
  for (int i = 0; i < jr->nins; i++)
    if (jr->ins[i].kind == JI_FWD && read_loss(rc, jr->ins[i].stage, jr->ins[i].mb, err) != MPL_OK) return MPL_ERR;
  return MPL_OK;
}

static int rank_step(RankCtx *rc, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  const JobRank *jr = &r->job->ranks[rc->rank];
  double t_start = now_s();
  memset(rc->comm_counts, 0, sizeof rc->comm_counts);
  for (int j = 0; j < r->m; j++) rc->mb_loss_set[j] = false;
  double ts0 = r->tracing ? mpl_trace_now(&r->trace) : 0;
  if (zero_grads(rc, err) != MPL_OK || fill_inputs(rc, step, err) != MPL_OK) return MPL_ERR;
  if (r->tracing) mpl_trace_event(&r->trace, rc->wrank, "setup", "setup", ts0, mpl_trace_now(&r->trace) - ts0);
  double busy = 0, upd0 = -1;
  for (int i = 0; i < jr->nins; i++) {
    const JobIns *ins = &jr->ins[i];
    if (rc->wrank == r->opts.fail_rank && step == r->opts.fail_step && i == r->opts.fail_ins)
      return rank_fail(rc, err, "injected failure at instruction %d (%s)", i, job_ins_name(ins->kind));
    double t0 = now_s(), tr0 = r->tracing ? mpl_trace_now(&r->trace) : 0;
    if (run_ins(rc, ins, step, err) != MPL_OK) return MPL_ERR;
    double t1 = now_s();
    if (ins_is_busy(ins->kind)) busy += t1 - t0;
    bool upd = job_ins_is_update(ins->kind), last = i + 1 == jr->nins || !job_ins_is_update(jr->ins[i + 1].kind);
    if (upd && upd0 < 0) upd0 = tr0;
    if (r->tracing && (!upd || last)) trace_ins(rc, ins, upd ? upd0 : tr0, mpl_trace_now(&r->trace));
    if (upd && last) upd0 = -1;
  }
  double tw0 = r->tracing ? mpl_trace_now(&r->trace) : 0;
  if (rc->dev.ops->sync && end_step_on_device(rc, err) != MPL_OK) return MPL_ERR;
  if (r->tracing && rc->dev.ops->sync)
    mpl_trace_event(&r->trace, rc->wrank, "wait", "wait", tw0, mpl_trace_now(&r->trace) - tw0);
  /* the first step of a run warms up (first touches of the arena, code, GEMM set-up):
     it is left out of the measured busy time and bubble when more steps follow */
  if (step > r->first_step || r->total_steps - r->first_step <= 1) {
    rc->stats.busy_s += busy;
    rc->stats.wall_s += now_s() - t_start;
  }
  return MPL_OK;
}

/* ---- the rank threads and the step barrier ----------------------------------------- */

static void record_failure(MplRun *r, const MplErr *e) {
  pthread_mutex_lock(&r->mu);
  bool first = !r->failed;
  if (first) {
    r->failed = true;
    r->first_err = *e;
  }
  pthread_mutex_unlock(&r->mu);
  if (r->world) mpl_comm_world_abort(r->world, e->msg);
  if (r->cworld) mpl_cuda_world_abort(r->cworld, e->msg);
}

static void *rank_main(void *arg) {
  RankCtx *rc = arg;
  MplRun *r = rc->run;
  if (rc->dev.ops->bind_thread) rc->dev.ops->bind_thread(&rc->dev);
  uint64_t seen = 0;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    while (!r->quit && r->gen == seen) pthread_cond_wait(&r->go, &r->mu);
    if (r->quit) break;
    seen = r->gen;
    int64_t step = r->step;
    pthread_mutex_unlock(&r->mu);
    MplErr e = {{0}};
    if (rank_step(rc, step, &e) != MPL_OK) record_failure(r, &e);
    pthread_mutex_lock(&r->mu);
    if (--r->running == 0) pthread_cond_broadcast(&r->done);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* Under MPI: world rank 0 receives the loss slots of the other ranks of tp index 0 (the
 * ones step_loss reads) into their shadows. */
static int gather_losses(MplRun *r, MplErr *err) {
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

/* Runs step r->step on every rank and waits for all of them. Under MPI: this process's
 * rank runs on this thread, then the losses go to world rank 0. */
static int run_one_step(MplRun *r, MplErr *err) {
  if (r->mpi) {
    if (rank_step(&r->ranks[r->me], r->step, err) != MPL_OK) return MPL_ERR;
    return gather_losses(r, err);
  }
  pthread_mutex_lock(&r->mu);
  r->running = r->nworld;
  r->gen++;
  pthread_cond_broadcast(&r->go);
  while (r->running > 0) pthread_cond_wait(&r->done, &r->mu);
  bool failed = r->failed;
  pthread_mutex_unlock(&r->mu);
  if (failed) return mpl_errf(err, "%s", r->first_err.msg);
  return MPL_OK;
}

static void stop_threads(MplRun *r) {
  if (!r->sync_init) return;
  pthread_mutex_lock(&r->mu);
  r->quit = true;
  pthread_cond_broadcast(&r->go);
  pthread_mutex_unlock(&r->mu);
  for (int i = 0; i < r->nworld; i++)
    if (r->ranks[i].started) pthread_join(r->ranks[i].tid, NULL);
}

static int start_threads(MplRun *r, MplErr *err) {
  if (r->mpi) { /* one rank, run on this thread (MPI is called from it alone) */
    RankCtx *rc = &r->ranks[r->me];
    if (rc->dev.ops->bind_thread) rc->dev.ops->bind_thread(&rc->dev);
    return MPL_OK;
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->go, NULL);
  pthread_cond_init(&r->done, NULL);
  r->sync_init = true;
  for (int i = 0; i < r->nworld; i++) {
    if (pthread_create(&r->ranks[i].tid, NULL, rank_main, &r->ranks[i]) != 0)
      return mpl_errf(err, "cannot start the thread of rank %d", i);
    r->ranks[i].started = true;
  }
  return MPL_OK;
}

/* ---- set-up ------------------------------------------------------------------------ */

/* Resolves every (value, micro-batch) buffer of rank rc and checks it fits the arena. */
static int resolve_buffers(RankCtx *rc, MplErr *err) {
  MplRun *r = rc->run;
  const Job *job = r->job;
  const JobRank *jr = &job->ranks[rc->rank];
  size_t n = (size_t)job->nvalues * r->m;
  rc->ptr = mpl_calloc(n ? n : 1, sizeof(void *));
  if (!rc->ptr) return mpl_errf(err, "out of memory");
  for (int v = 0; v < job->nvalues; v++) {
    bool persistent = job->values[v].kind == JV_PARAM || job->values[v].kind == JV_GRAD;
    for (int j = 0; j < r->m; j++) {
      uint64_t off = jr->offset[(size_t)v * r->m + (persistent ? 0 : j)];
      if (off == UINT64_MAX) continue;
      uint64_t bytes = value_bytes(job, v);
      if (off > jr->arena_bytes || bytes > jr->arena_bytes - off)
        return mpl_errf(err, "rank %d: value %d (micro-batch %d) at offset %llu does not fit the arena of %llu bytes",
                        rc->rank, v, j, (unsigned long long)off, (unsigned long long)jr->arena_bytes);
      rc->ptr[(size_t)v * r->m + j] = (uint8_t *)rc->arena + off;
    }
  }
  return MPL_OK;
}

/* The device of world rank i: --devices' list, or else device i (under MPI: the process's
 * rank on its host) mod the device count. */
static int device_index(const MplRun *r, int i) {
  if (r->opts.device_ids && i < r->opts.ndevice_ids) return r->opts.device_ids[i];
  int k = r->mpi ? mpl_comm_mpi_local_rank(r->mpi) : i;
  return r->ndevices > 0 ? k % r->ndevices : k;
}

/* Does pipeline rank pr's arena hold value v (a buffer at slot 0)? Known from the job alone. */
static bool rank_has(const MplRun *r, int pr, int v) {
  return r->job->ranks[pr].offset[(size_t)v * r->m] != UINT64_MAX;
}

/* What every rank context has, an MPI process's shadows of the other ranks included:
 * its ids, the params it holds, its loss slots (rank 0 gathers the losses into them). */
static int init_rank_ids(MplRun *r, int i, MplErr *err) {
  RankCtx *rc = &r->ranks[i];
  const Job *job = r->job;
  rc->run = r;
  rc->wrank = i;
  rc->rank = i % r->pp;
  rc->tpi = i / r->pp % r->tp;
  rc->dpi = i / (r->pp * r->tp);
  rc->holds = mpl_calloc((size_t)job->nparams + 1, sizeof(bool));
  rc->mb_loss = mpl_calloc((size_t)r->m, sizeof(double));
  rc->mb_loss_set = mpl_calloc((size_t)r->m, sizeof(bool));
  if (!rc->holds || !rc->mb_loss || !rc->mb_loss_set) return mpl_errf(err, "out of memory");
  for (int p = 0; p < job->nparams; p++) rc->holds[p] = rank_has(r, rc->rank, job->params[p].value);
  return MPL_OK;
}

/* The largest input of pipeline rank pr's reduce-scatters: the size of its scratch. */
static size_t rs_bytes(const Job *job, int pr) {
  size_t most = 0;
  for (int st = 0; st < job->nstages; st++) {
    if (job->stages[st].rank != pr) continue;
    for (int k = 0; k < JP__COUNT; k++)
      for (int i = 0; i < job->stages[st].prog[k].nsteps; i++) {
        const JobStep *s = &job->stages[st].prog[k].steps[i];
        if (s->kind == JS_COMM && s->comm == JC_REDUCE_SCATTER && s->nargs == 2 && value_bytes(job, s->args[1]) > most)
          most = value_bytes(job, s->args[1]);
      }
  }
  return most;
}

static int init_rank(MplRun *r, int i, MplErr *err) {
  RankCtx *rc = &r->ranks[i];
  const Job *job = r->job;
  if (init_rank_ids(r, i, err) != MPL_OK) return MPL_ERR;
  rc->live = true;
  rc->dev.ops = r->devops;
  rc->dev.tf32 = r->opts.tf32;
  if (r->devops->init(&rc->dev, device_index(r, i), r->opts.threads, err) != MPL_OK) return MPL_ERR;
  if (r->devops->load_kernels && r->devops->load_kernels(&rc->dev, &job->kernels, err) != MPL_OK) return MPL_ERR;
  uint64_t ab = job->ranks[rc->rank].arena_bytes;
  if (r->devops->arena_alloc(&rc->dev, ab, &rc->arena, err) != MPL_OK) return MPL_ERR;
  if (r->devops->zero(&rc->dev, rc->arena, (size_t)ab, err) != MPL_OK) return MPL_ERR;
  rc->stats.arena_bytes = ab;
  size_t rsb = rs_bytes(job, rc->rank);
  if (rsb && r->devops->arena_alloc(&rc->dev, rsb, &rc->rs_buf, err) != MPL_OK) return MPL_ERR;
  if (r->world) rc->comm = mpl_comm_world_rank(r->world, i);
  if (r->mpi) rc->comm = r->mpi;
  int np = job->nparams;
  rc->grad = mpl_calloc((size_t)np + 1, sizeof(float *));
  rc->opt[0] = mpl_calloc((size_t)np + 1, sizeof(float *));
  rc->opt[1] = mpl_calloc((size_t)np + 1, sizeof(float *));
  rc->norm_added = mpl_calloc((size_t)np + 1, sizeof(bool));
  rc->norm_buf = mpl_calloc((size_t)np + 1, sizeof(double));
  rc->norm_recv = mpl_calloc((size_t)np + 1, sizeof(double));
  rc->norm_total = mpl_calloc((size_t)np + 1, sizeof(double));
  if (!rc->grad || !rc->opt[0] || !rc->opt[1] || !rc->norm_added || !rc->norm_buf || !rc->norm_recv || !rc->norm_total)
    return mpl_errf(err, "out of memory");
  if (resolve_buffers(rc, err) != MPL_OK) return MPL_ERR;
  size_t cap = 0;
  for (int k = 0; k < job->ninputs; k++) {
    size_t b = value_bytes(job, job->inputs[k].value);
    if (b > cap) cap = b;
  }
  rc->stage_buf = mpl_malloc(cap ? cap : 1);
  if (!rc->stage_buf) return mpl_errf(err, "out of memory");
  return MPL_OK;
}

static int use_rank(const Job *job, const JobParam *p, int u) { return job->stages[p->use_stage[u]].rank; }

/* Which params an UPDATE of the owner's stream keeps the replica's chunk of (ZeRO-1). */
static void find_chunked(MplRun *r) {
  const JobRank *jr;
  for (int pi = 0; pi < r->job->nparams; pi++) {
    jr = &r->job->ranks[r->owner[pi]];
    for (int i = 0; i < jr->nins; i++)
      if (jr->ins[i].kind == JI_UPDATE && jr->ins[i].param == pi) {
        r->updated[pi] = true;
        r->chunked[pi] = (jr->ins[i].flags & JF_CHUNK) != 0;
      }
  }
}

/* Holders, owners; checks that every use accumulator is where it should be. */
static int init_param_maps(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  r->owner = mpl_calloc((size_t)job->nparams + 1, sizeof(int));
  r->chunked = mpl_calloc((size_t)job->nparams + 1, sizeof(bool));
  r->updated = mpl_calloc((size_t)job->nparams + 1, sizeof(bool));
  if (!r->owner || !r->chunked || !r->updated) return mpl_errf(err, "out of memory");
  for (int pi = 0; pi < job->nparams; pi++) {
    const JobParam *p = &job->params[pi];
    int nh = 0;
    r->owner[pi] = -1;
    for (int h = 0; h < r->pp; h++) /* replica 0, tp index 0: world ranks 0 .. pp-1 */
      if (r->ranks[h].holds[pi]) {
        if (r->owner[pi] < 0) r->owner[pi] = h;
        nh++;
      }
    if (nh == 0) return mpl_errf(err, "param %s is held by no rank", p->name);
    if (job->values[p->value].dtype != JDT_F32) return mpl_errf(err, "param %s: only f32 params are supported", p->name);
    for (int u = 0; u < p->nuses; u++) {
      if (p->use_stage[u] < 0 || p->use_stage[u] >= job->nstages)
        return mpl_errf(err, "param %s: use %d is on stage %d", p->name, u, p->use_stage[u]);
      int ur = use_rank(job, p, u);
      if (!r->ranks[ur].holds[pi] || !rank_has(r, ur, p->use_value[u]))
        return mpl_errf(err, "param %s: the accumulator of use %d is not on rank %d", p->name, u, ur);
      if (job->values[p->use_value[u]].numel != p->numel)
        return mpl_errf(err, "param %s: the accumulator of use %d has the wrong size", p->name, u);
    }
  }
  find_chunked(r);
  return MPL_OK;
}

/* The params whole: a split dimension holds tp times the part. */
static int init_whole_params(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  r->wparams = mpl_calloc((size_t)job->nparams + 1, sizeof(JobParam));
  if (!r->wparams) return mpl_errf(err, "out of memory");
  for (int p = 0; p < job->nparams; p++) {
    JobParam *w = &r->wparams[p];
    *w = job->params[p];
    if (w->groups < 1) w->groups = 1;
    if (w->split_dim >= 0) {
      if (w->split_dim >= w->rank) return mpl_errf(err, "param %s: split on dimension %d of %d", w->name, w->split_dim, w->rank);
      w->dims[w->split_dim] *= r->tp;
      w->numel *= r->tp;
      if (w->dims[w->split_dim] % ((int64_t)r->tp * w->groups))
        return mpl_errf(err, "param %s: dimension %d does not split into %d groups over tp = %d", w->name, w->split_dim,
                        w->groups, r->tp);
    }
  }
  return MPL_OK;
}

/* The seed's stream of param `name`: the same on every rank and every mesh. */
static uint64_t init_stream(uint64_t seed, const char *name) {
  return mpl_mix64(mpl_mix64(seed) ^ mpl_hash_name(name));
}

static int init_params(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  for (int pi = 0; pi < job->nparams; pi++) {
    const JobParam *p = &r->wparams[pi];
    float *buf = mpl_malloc((size_t)p->numel * 4 + 4);
    if (!buf) return mpl_errf(err, "out of memory initialising %s", p->name);
    uint64_t stream = init_stream(job->train.seed, p->name);
    for (int64_t i = 0; i < p->numel; i++) {
      switch (p->init) {
      case 0: buf[i] = 0.0f; break;
      case 1: buf[i] = 1.0f; break;
      case 2: buf[i] = (float)(mpl_normal(stream, (uint64_t)i) * p->init_a); break;
      default: buf[i] = (float)(p->init_a + (p->init_b - p->init_a) * mpl_uniform(stream, (uint64_t)i)); break;
      }
    }
    int st = mpl_run_set_param(r, pi, buf, err);
    mpl_free(buf);
    if (st != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

static int init_tokens(MplRun *r, const char *path, MplErr *err) {
  const Job *job = r->job;
  if (mpl_tokens_open(&r->tok, path, err) != MPL_OK) return MPL_ERR;
  r->tokens = true;
  int nroles = 0;
  for (int i = 0; i < job->ninputs; i++) {
    const JobInput *in = &job->inputs[i];
    if (r->role[i] != 0 && r->role[i] != 1)
      return mpl_errf(err, "token data feeds (idx, targets), but the model has input '%s'", in->name);
    if (in->dtype != JDT_I32 || in->rank != 2 || in->dims[1] != job->train.seq)
      return mpl_errf(err, "token data needs i32[B, %lld] inputs; '%s' is not", (long long)job->train.seq, in->name);
    nroles++;
  }
  if (nroles == 0) return mpl_errf(err, "token data, but the model has no inputs");
  for (int i = 0; i < job->ninputs; i++)
    if (job->inputs[i].hi > 0 && r->tok.max_token >= job->inputs[i].hi)
      return mpl_errf(err, "%s: token %d is out of range for input '%s' (vocabulary %lld)", path, r->tok.max_token,
                      job->inputs[i].name, (long long)job->inputs[i].hi);
  return mpl_loader_init(&r->loader, &r->tok, r->B * r->m * r->dp, job->train.seq, err); /* the step's whole batch */
}

static int init_synth(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  MplSynthInput *si = mpl_calloc((size_t)job->ninputs + 1, sizeof *si);
  if (!si) return mpl_errf(err, "out of memory");
  int st = MPL_OK;
  for (int i = 0; i < job->ninputs && st == MPL_OK; i++) {
    const JobInput *in = &job->inputs[i];
    si[i].row_elems = job->values[in->value].numel / r->B;
    if (in->dtype == JDT_F32) si[i].kind = MPL_SYNTH_F32;
    else if (in->dtype == JDT_I32) si[i].kind = MPL_SYNTH_I32, si[i].hi = in->hi > 0 ? (int32_t)in->hi : 1;
    else st = mpl_errf(err, "synthetic data: input '%s' must be f32 or i32", in->name);
  }
  int64_t n = job->train.synthetic_n > 0 ? job->train.synthetic_n : 1024;
  if (st == MPL_OK && mpl_synth_init(&r->synth, n, si, job->ninputs, job->train.seed, err) == MPL_OK)
    r->have_synth = true;
  else
    st = MPL_ERR;
  mpl_free(si);
  return st;
}

/* Token roles: the job's, or else (a model compiled for synthetic data) the first two
 * i32 [B, seq] inputs in order are (idx, targets). */
static int init_roles(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  r->role = mpl_calloc((size_t)job->ninputs + 1, sizeof(int));
  if (!r->role) return mpl_errf(err, "out of memory");
  bool any = false;
  for (int i = 0; i < job->ninputs; i++) any |= job->inputs[i].token_role >= 0;
  int next = 0;
  for (int i = 0; i < job->ninputs; i++) {
    const JobInput *in = &job->inputs[i];
    if (any) r->role[i] = in->token_role;
    else if (next < 2 && in->dtype == JDT_I32 && in->rank == 2 && in->dims[1] == job->train.seq) r->role[i] = next++;
    else r->role[i] = -1;
  }
  return MPL_OK;
}

static int init_data(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  if (init_roles(r, err) != MPL_OK) return MPL_ERR;
  for (int i = 0; i < job->ninputs; i++) {
    const JobInput *in = &job->inputs[i];
    if (in->value < 0 || in->value >= job->nvalues || in->rank < 1 || in->dims[0] != r->B)
      return mpl_errf(err, "input '%s' is not [%lld, ...] per micro-batch", in->name, (long long)r->B);
  }
  const char *path = r->opts.data_path ? r->opts.data_path : (job->train.data_kind == 1 ? job->train.data_path : NULL);
  if (path) return init_tokens(r, path, err);
  return init_synth(r, err);
}

static int check_job(const Job *job, MplErr *err) {
  if (job->dp < 1 || job->tp < 1 || job->dp * job->tp * job->pp > 4096)
    return mpl_errf(err, "bad job: mesh dp = %d, tp = %d, pp = %d", job->dp, job->tp, job->pp);
  if (job->train.batch % (job->train.microbatches * job->dp))
    return mpl_errf(err, "bad job: batch %lld does not divide into %lld micro-batches on %d replicas",
                    (long long)job->train.batch, (long long)job->train.microbatches, job->dp);
  if (job->pp < 1 || job->train.microbatches < 1 || job->train.batch % job->train.microbatches)
    return mpl_errf(err, "bad job: pp = %d, microbatches = %lld", job->pp, (long long)job->train.microbatches);
  for (int s = 0; s < job->nstages; s++)
    if (job->stages[s].rank < 0 || job->stages[s].rank >= job->pp)
      return mpl_errf(err, "bad job: stage %d on rank %d", s, job->stages[s].rank);
  for (int x = 0; x < job->nxfers; x++)
    if (job->xfers[x].src < 0 || job->xfers[x].src >= job->nstages || job->xfers[x].dst < 0 ||
        job->xfers[x].dst >= job->nstages)
      return mpl_errf(err, "bad job: transfer %d between stages %d and %d", x, job->xfers[x].src, job->xfers[x].dst);
  return MPL_OK;
}

static int init_kernels(MplRun *r, MplErr *err) {
  if (r->opts.kernels) {
    if (r->opts.nkernels != r->job->kernels.nkernels)
      return mpl_errf(err, "%d kernels given for a job with %d", r->opts.nkernels, r->job->kernels.nkernels);
    r->kfn = r->opts.kernels;
    return MPL_OK;
  }
  if (mpl_cpu_kernels_load(&r->cpu_kernels, &r->job->kernels, err) != MPL_OK) return MPL_ERR;
  r->kfn = r->cpu_kernels.fn;
  return MPL_OK;
}

static int init_observability(MplRun *r, MplErr *err) {
  if (r->opts.trace_path) {
    if (mpl_trace_init(&r->trace, r->nworld, err) != MPL_OK) return MPL_ERR;
    mpl_trace_set_mesh(&r->trace, r->tp, r->pp);
    r->tracing = true;
  }
  if (r->opts.metrics_path && r->lead) {
    if (mpl_metrics_open(&r->metrics, r->opts.metrics_path, err) != MPL_OK) return MPL_ERR;
    r->metrics_open = true;
  }
  return MPL_OK;
}

/* --devices: cpu, or cuda (dp, pp and tp). */
static int init_device_kind(MplRun *r, MplErr *err) {
  const char *kind = r->opts.device_kind ? r->opts.device_kind : "cpu";
  if (r->opts.device_ops) {
    r->devops = r->opts.device_ops;
    return MPL_OK;
  }
  if (!strcmp(kind, "cpu")) {
    r->devops = &mpl_device_cpu_ops;
    return MPL_OK;
  }
  if (strcmp(kind, "cuda") != 0) return mpl_errf(err, "device kind '%s' is not available", kind);
  r->devops = &mpl_device_cuda_ops;
  return mpl_cuda_device_count(&r->ndevices, err);
}

/* cuda: the communicator over the ranks' devices (after they are initialised); under MPI
 * this process's rank's, over the MPI communicator. */
static int init_device_comm(MplRun *r, MplErr *err) {
  MplCommMesh mesh = {.dp = r->dp, .tp = r->tp, .pp = r->pp, .zero = r->job->train.zero != 0};
  if (r->mpi) {
    if (mpl_cuda_mpi_init(&r->cmpi, r->mpi, &r->ranks[r->me].dev, &mesh, err) != MPL_OK) return MPL_ERR;
    r->ranks[r->me].comm = r->cmpi;
    return MPL_OK;
  }
  MplDevice **devs = mpl_calloc((size_t)r->nworld, sizeof *devs);
  if (!devs) return mpl_errf(err, "out of memory");
  for (int i = 0; i < r->nworld; i++) devs[i] = &r->ranks[i].dev;
  int st = mpl_cuda_world_init(&r->cworld, r->nworld, devs, &mesh, err);
  mpl_free(devs);
  for (int i = 0; i < r->nworld && st == MPL_OK; i++) r->ranks[i].comm = mpl_cuda_world_rank(r->cworld, i);
  return st;
}

/* Under mpirun (opts.comm): this process runs world rank comm->rank of exactly
 * dp * tp * pp processes, on the cpu device or on its GPU (init_device_comm). */
static int init_mpi(MplRun *r, MplErr *err) {
  r->mpi = r->opts.comm;
  r->lead = !r->mpi || r->mpi->rank == 0;
  if (!r->mpi) return MPL_OK;
  if (r->mpi->size != r->nworld)
    return mpl_errf(err, "mpirun started %d processes, but the job has %d ranks (dp %d x tp %d x pp %d): use mpirun -np %d",
                    r->mpi->size, r->nworld, r->dp, r->tp, r->pp, r->nworld);
  r->me = r->mpi->rank;
  return MPL_OK;
}

static int run_init_body(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  if (check_job(job, err) != MPL_OK) return MPL_ERR;
  if (init_device_kind(r, err) != MPL_OK) return MPL_ERR;
  r->pp = job->pp;
  r->dp = job->dp > 0 ? job->dp : 1;
  r->tp = job->tp > 0 ? job->tp : 1;
  r->nworld = r->dp * r->tp * r->pp;
  r->m = (int)job->train.microbatches;
  r->B = job->train.batch / (job->train.microbatches * r->dp);
  r->total_steps = r->opts.steps >= 0 ? r->opts.steps : job->train.steps;
  mpl_optim_cfg_from_job(&r->ocfg, &job->train);
  r->ocfg.steps = r->total_steps;
  r->optim_fresh = true;
  r->last_loss = NAN;
  if (!r->devops->load_kernels && init_kernels(r, err) != MPL_OK) return MPL_ERR;
  bool cuda = r->devops == &mpl_device_cuda_ops;
  if (init_mpi(r, err) != MPL_OK) return MPL_ERR;
  if (!cuda && !r->mpi && mpl_comm_world_init(&r->world, r->nworld, err) != MPL_OK) return MPL_ERR;
  r->ranks = mpl_calloc((size_t)r->nworld, sizeof *r->ranks);
  if (!r->ranks) return mpl_errf(err, "out of memory");
  for (int i = 0; i < r->nworld; i++)
    if ((r->mpi && i != r->me ? init_rank_ids(r, i, err) : init_rank(r, i, err)) != MPL_OK) return MPL_ERR;
  if (cuda && init_device_comm(r, err) != MPL_OK) return MPL_ERR;
  if (init_param_maps(r, err) != MPL_OK || init_whole_params(r, err) != MPL_OK) return MPL_ERR;
  for (int i = 0; i < r->nworld; i++)
    if (r->ranks[i].live && upd_init_rank(r, &r->ranks[i], err) != MPL_OK) return MPL_ERR;
  if (init_data(r, err) != MPL_OK || init_params(r, err) != MPL_OK) return MPL_ERR;
  if (r->opts.init_path && mpl_ckpt_load_params(r, r->opts.init_path, err) != MPL_OK) return MPL_ERR;
  if (r->opts.resume_dir && mpl_ckpt_resume(r, r->opts.resume_dir, err) != MPL_OK) return MPL_ERR;
  if (init_observability(r, err) != MPL_OK) return MPL_ERR;
  return start_threads(r, err);
}

int mpl_run_init(MplRun **out, const Job *job, const MplRunOpts *opts, MplErr *err) {
  *out = NULL;
  MplRun *r = mpl_calloc(1, sizeof *r);
  if (!r) return mpl_errf(err, "out of memory");
  r->job = job;
  r->opts = *opts;
  if (r->opts.threads < 1) r->opts.threads = 1;
  if (!r->opts.out) r->opts.out = stdout;
  if (run_init_body(r, err) != MPL_OK) {
    mpl_run_free(r);
    return MPL_ERR;
  }
  *out = r;
  return MPL_OK;
}

static void free_rank(RankCtx *rc) {
  upd_free_rank(rc); /* grad scratch, opt, tmp, zsum, zin and norm_dev are carved from its state_mem */
  mpl_free(rc->opt[0]);
  mpl_free(rc->opt[1]);
  mpl_free(rc->holds);
  mpl_free(rc->grad);
  mpl_free(rc->norm_added);
  mpl_free(rc->norm_buf);
  mpl_free(rc->norm_recv);
  mpl_free(rc->norm_total);
  mpl_free(rc->mb_loss);
  mpl_free(rc->mb_loss_set);
  mpl_free(rc->stage_buf);
  mpl_free(rc->argv);
  if (rc->rs_buf && rc->dev.ops) rc->dev.ops->arena_free(&rc->dev, rc->rs_buf);
  rc->rs_buf = NULL;
  mpl_free(rc->ptr);
  if (rc->dev.ops) {
    if (rc->arena) rc->dev.ops->arena_free(&rc->dev, rc->arena);
    rc->dev.ops->free(&rc->dev);
  }
}

void mpl_run_free(MplRun *r) {
  if (!r) return;
  stop_threads(r);
  if (r->sync_init) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->go);
    pthread_cond_destroy(&r->done);
  }
  if (r->cworld) mpl_cuda_world_free(r->cworld); /* before the devices it uses */
  if (r->cmpi) r->cmpi->ops->free(r->cmpi);
  for (int i = 0; r->ranks && i < r->nworld; i++)
    if (r->ranks[i].run) free_rank(&r->ranks[i]);
  mpl_free(r->ranks);
  if (r->world) mpl_comm_world_free(r->world);
  mpl_cpu_kernels_free(&r->cpu_kernels);
  mpl_free(r->owner);
  mpl_free(r->wparams);
  mpl_free(r->chunked);
  mpl_free(r->updated);
  mpl_free(r->role);
  if (r->tokens) mpl_tokens_free(&r->tok);
  if (r->have_synth) mpl_synth_free(&r->synth);
  if (r->tracing) mpl_trace_free(&r->trace);
  if (r->metrics_open) mpl_metrics_close(&r->metrics);
  mpl_free(r);
}

/* ---- the training loop ------------------------------------------------------------- */

static double step_loss(const MplRun *r) {
  double s = 0;
  int n = 0;
  for (int d = 0; d < r->dp; d++)
    for (int j = 0; j < r->m; j++)
      for (int i = 0; i < r->pp; i++) {
        const RankCtx *rc = &r->ranks[world_of(r, d, 0, i)];
        if (rc->mb_loss_set[j]) {
          s += rc->mb_loss[j];
          n++;
          break;
        }
      }
  return n ? s / n : NAN;
}

static void fmt_eta(char *buf, size_t n, double s) {
  long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
  if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static int report_step(MplRun *r, int64_t step, double step_s, double avg_s, MplErr *err) {
  double lr = mpl_lr_at(&r->ocfg, step);
  double tokens = (double)(r->B * r->m * r->dp); /* the step's rows; tokens when a row is a sequence */
  bool seq = false;
  for (int i = 0; i < r->job->ninputs && !seq; i++) {
    const JobValue *v = &r->job->values[r->job->inputs[i].value];
    seq = r->tokens || (v->rank >= 2 && v->dims[1] == r->job->train.seq);
  }
  if (seq) tokens *= (double)r->job->train.seq;
  double tps = step_s > 0 ? tokens / step_s : 0;
  if (!r->opts.quiet && r->lead) {
    char eta[32];
    fmt_eta(eta, sizeof eta, avg_s * (double)(r->total_steps - step - 1));
    fprintf(r->opts.out, "step %lld/%lld | loss %.4f | lr %.2e | %.0f %s | %.1f ms/step | ETA %s\n",
            (long long)step + 1, (long long)r->total_steps, r->last_loss, lr, tps, seq ? "tok/s" : "samples/s",
            step_s * 1e3, eta);
    fflush(r->opts.out);
  }
  if (!r->metrics_open) return MPL_OK;
  const char *keys[] = {"step", "loss", "lr", seq ? "tok_s" : "samples_s", "ms"};
  double vals[] = {(double)(step + 1), r->last_loss, lr, tps, step_s * 1e3};
  return mpl_metrics_line(&r->metrics, keys, vals, 5, err);
}

/* Under MPI: every rank's trace events to world rank 0 (a count, then the events). */
static int gather_trace(MplRun *r, MplErr *err) {
  MplComm *c = r->mpi;
  if (r->me != 0) {
    MplTraceRank *tr = &r->trace.ranks[r->me];
    int64_t n = tr->n;
    if (c->ops->send(c, 0, TAG_MAIN(MAIN_TRACE_N, r->me), &n, sizeof n) != MPL_OK ||
        c->ops->send(c, 0, TAG_MAIN(MAIN_TRACE_EV, r->me), tr->ev, (size_t)n * sizeof *tr->ev) != MPL_OK)
      return mpl_errf(err, "trace: %s", c->err.msg);
    return MPL_OK;
  }
  for (int w = 1; w < r->nworld; w++) {
    MplTraceRank *tr = &r->trace.ranks[w];
    int64_t n = 0;
    if (c->ops->recv(c, w, TAG_MAIN(MAIN_TRACE_N, w), &n, sizeof n) != MPL_OK) return mpl_errf(err, "trace: %s", c->err.msg);
    MplTraceEvent *ev = mpl_malloc((size_t)n * sizeof *ev + 1);
    if (!ev) return mpl_errf(err, "trace: out of memory");
    mpl_free(tr->ev);
    tr->ev = ev, tr->n = tr->cap = n;
    if (c->ops->recv(c, w, TAG_MAIN(MAIN_TRACE_EV, w), ev, (size_t)n * sizeof *ev) != MPL_OK)
      return mpl_errf(err, "trace: %s", c->err.msg);
  }
  return MPL_OK;
}

int mpl_run_train(MplRun *r, MplErr *err) {
  double t_begin = now_s();
  int64_t done = 0;
  bool ckpt_written = false;
  r->first_step = r->step;
  if (r->opts.resume_dir && r->step >= r->total_steps && r->total_steps > 0 && !r->opts.quiet && r->lead)
    fprintf(r->opts.out, "mplrun: the checkpoint is at step %lld of %lld: nothing to train (raise --steps)\n",
            (long long)r->step, (long long)r->total_steps);
  for (; r->step < r->total_steps; r->step++) {
    double t0 = now_s();
    if (run_one_step(r, err) != MPL_OK) return MPL_ERR;
    double dt = now_s() - t0;
    r->last_loss = step_loss(r);
    r->optim_fresh = false;
    done++;
    if (report_step(r, r->step, dt, (now_s() - t_begin) / (double)done, err) != MPL_OK) return MPL_ERR;
    if (r->lead && !isfinite(r->last_loss))
      return mpl_errf(err, "step %lld: the loss is %s: training stopped, nothing more is written (lower the learning "
                      "rate or set grad_clip)", (long long)r->step + 1, isnan(r->last_loss) ? "nan" : "inf");
    if (r->tokens) mpl_loader_advance(&r->loader);
    ckpt_written = false;
    if (r->opts.ckpt_dir && r->opts.ckpt_every > 0 && (r->step + 1) % r->opts.ckpt_every == 0) {
      r->step++; /* the checkpoint records the next step to run */
      int st = mpl_ckpt_write_dir(r, r->opts.ckpt_dir, err);
      r->step--;
      if (st != MPL_OK) return MPL_ERR;
      ckpt_written = true;
    }
  }
  if (r->opts.ckpt_dir && !ckpt_written && mpl_ckpt_write_dir(r, r->opts.ckpt_dir, err) != MPL_OK) return MPL_ERR;
  if (r->opts.save_path && mpl_ckpt_save_params(r, r->opts.save_path, err) != MPL_OK) return MPL_ERR;
  if (r->tracing && r->mpi && gather_trace(r, err) != MPL_OK) return MPL_ERR;
  if (r->tracing && r->lead && mpl_trace_write(&r->trace, r->opts.trace_path, err) != MPL_OK) return MPL_ERR;
  return MPL_OK;
}

/* Under MPI: world rank 0 receives every rank's stats (the others send theirs). */
static void gather_stats(const MplRun *r, MplRankStats *all) {
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

void mpl_run_report(const MplRun *r, FILE *out) {
  MplRankStats *all = NULL;
  if (r->mpi) {
    all = mpl_calloc((size_t)r->nworld, sizeof *all);
    if (!all) return;
    gather_stats(r, all);
  }
  for (int i = 0; i < r->nworld && r->lead; i++) {
    const MplRankStats *s = all ? &all[i] : &r->ranks[i].stats;
    double bubble = s->wall_s > 0 ? 1.0 - s->busy_s / s->wall_s : 0;
    fprintf(out, "rank %d: busy %.1f ms | bubble %.3f (predicted %.3f) | arena %llu bytes\n", i, s->busy_s * 1e3,
            bubble, r->job->ranks[i % r->pp].predicted_bubble, (unsigned long long)s->arena_bytes);
  }
  mpl_free(all);
}

/* The last step's communication of every world rank; under MPI the others' counts are
 * sent to world rank 0 (every process calls this, as mpl_run_report). */
int mpl_run_comm_counts(const MplRun *r, MplCommCount *out, MplErr *err) {
  size_t row = sizeof(MplCommCount) * MPL_COMM__COUNT;
  memset(out, 0, row * (size_t)r->nworld);
  for (int w = 0; w < r->nworld; w++)
    if (r->ranks[w].live) memcpy(out + (size_t)w * MPL_COMM__COUNT, r->ranks[w].comm_counts, row);
  if (!r->mpi) return MPL_OK;
  MplComm *c = r->mpi;
  if (r->me != 0 && c->ops->send(c, 0, TAG_MAIN(MAIN_COMM, r->me), out + (size_t)r->me * MPL_COMM__COUNT, row) != MPL_OK)
    return mpl_errf(err, "communication counts: %s", c->err.msg);
  for (int w = 1; w < r->nworld && r->me == 0; w++)
    if (c->ops->recv(c, w, TAG_MAIN(MAIN_COMM, w), out + (size_t)w * MPL_COMM__COUNT, row) != MPL_OK)
      return mpl_errf(err, "communication counts: %s", c->err.msg);
  return MPL_OK;
}

int mpl_exec_run(const Job *job, const MplRunOpts *opts, MplErr *err) {
  MplRun *r;
  if (mpl_run_init(&r, job, opts, err) != MPL_OK) return MPL_ERR;
  int st = mpl_run_train(r, err);
  if (st == MPL_OK && !r->opts.quiet) mpl_run_report(r, r->opts.out);
  mpl_run_free(r);
  return st;
}

/* ---- access for checkpoints and tests ------------------------------------------------ */

int64_t mpl_run_step(const MplRun *r) { return r->step; }
double mpl_run_last_loss(const MplRun *r) { return r->last_loss; }
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

int mpl_run_set_param(MplRun *r, int p, const float *in, MplErr *err) { return scatter_whole(r, p, in, 0, false, err); }

int mpl_run_optim_slots(const MplRun *r, const char *const **names) {
  static const char *const adamw[] = {"exp_avg", "exp_avg_sq"}, *const sgd[] = {"momentum"};
  if (r->ocfg.kind == MPL_OPT_ADAMW) {
    *names = adamw;
    return 2;
  }
  *names = sgd;
  return r->ocfg.momentum != 0 ? 1 : 0;
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

int64_t mpl_run_data_pos(const MplRun *r) { return r->tokens ? mpl_loader_tell(&r->loader) : 0; }

int mpl_run_restore(MplRun *r, int64_t step, int64_t data_pos, MplErr *err) {
  if (step < 0) return mpl_errf(err, "bad step %lld", (long long)step);
  r->step = step;
  r->optim_fresh = step == 0;
  if (r->tokens) return mpl_loader_seek(&r->loader, data_pos, err);
  return MPL_OK;
}

/* ---- sampling ------------------------------------------------------------------------- */

static int sample_input_index(const MplRun *r, int role) {
  for (int i = 0; i < r->job->ninputs; i++)
    if (r->role[i] == role) return i;
  return -1;
}

/* Fills micro-batch 0's inputs: idx row 0 = window (zero padded), everything else 0. */
static int sample_fill(MplRun *r, const int32_t *window, int64_t wlen, int idx_input, MplErr *err) {
  const Job *job = r->job;
  for (int i = 0; i < job->ninputs; i++) {
    int v = job->inputs[i].value;
    size_t bytes = value_bytes(job, v);
    for (int k = 0; k < r->pp; k++) {
      RankCtx *rc = &r->ranks[k];
      if (!vptr(rc, v, 0)) continue;
      memset(rc->stage_buf, 0, bytes);
      if (i == idx_input) memcpy(rc->stage_buf, window, (size_t)wlen * 4);
      if (rc->dev.ops->copy_from_host(&rc->dev, vptr(rc, v, 0), rc->stage_buf, bytes, err) != MPL_OK) return MPL_ERR;
    }
  }
  return MPL_OK;
}

/* bytes from rank a's arena to rank b's (through the host on devices with their own memory). */
static int copy_between(RankCtx *ra, const void *a, RankCtx *rb, void *b, size_t bytes, MplErr *err) {
  if (!ra->dev.ops->device_memory) {
    memcpy(b, a, bytes);
    return MPL_OK;
  }
  void *h = mpl_malloc(bytes ? bytes : 1);
  if (!h) return mpl_errf(err, "out of memory");
  int st = ra->dev.ops->copy_to_host(&ra->dev, h, a, bytes, err);
  if (st == MPL_OK) st = rb->dev.ops->copy_from_host(&rb->dev, b, h, bytes, err);
  if (st == MPL_OK && rb->dev.ops->sync) st = rb->dev.ops->sync(&rb->dev, err);
  mpl_free(h);
  return st;
}

/* Runs every stage's forward program for micro-batch 0 in stage order on this thread,
 * copying activations between the ranks' arenas directly. */
static int sample_forward(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  for (int s = 0; s < job->nstages; s++) {
    RankCtx *rc = &r->ranks[job->stages[s].rank];
    if (run_prog(rc, s, JP_FWD, 0, r->step, err) != MPL_OK) return MPL_ERR;
    for (int x = 0; x < job->nxfers; x++) {
      const JobXfer *xf = &job->xfers[x];
      if (xf->grad || xf->src != s) continue;
      RankCtx *dst = &r->ranks[job->stages[xf->dst].rank];
      if (dst == rc) continue;
      for (int i = 0; i < xf->nvals; i++) {
        void *a = need_ptr(rc, xf->vals[i], 0, s, err), *b = a ? need_ptr(dst, xf->vals[i], 0, xf->dst, err) : NULL;
        if (!b || copy_between(rc, a, dst, b, value_bytes(job, xf->vals[i]), err) != MPL_OK) return MPL_ERR;
      }
    }
  }
  return MPL_OK;
}

static int32_t sample_pick(const float *logits, int64_t V, double u) {
  double mx = -INFINITY, z = 0;
  for (int64_t i = 0; i < V; i++) if (logits[i] > mx) mx = logits[i];
  for (int64_t i = 0; i < V; i++) z += exp((double)logits[i] - mx);
  double c = 0;
  for (int64_t i = 0; i < V; i++) {
    c += exp((double)logits[i] - mx) / z;
    if (u < c) return (int32_t)i;
  }
  return (int32_t)(V - 1);
}

static void put_token(FILE *out, int32_t t) {
  if (t >= 0 && t < 256) fputc(t, out);
  else fprintf(out, "<%d>", t);
}

int mpl_run_sample(MplRun *r, const char *prompt, int64_t n, FILE *out, MplErr *err) {
  const Job *job = r->job;
  int idx_in = sample_input_index(r, 0), ls = -1;
  for (int s = 0; s < job->nstages; s++) if (job->stages[s].logits_value >= 0) ls = s;
  if (r->mpi) return mpl_errf(err, "--sample is not supported under mpirun yet: sample with a threads run (--init FILE)");
  if (idx_in < 0 || ls < 0) return mpl_errf(err, "--sample needs a token model (inputs idx, targets and a cross_entropy loss)");
  if (r->tp > 1) return mpl_errf(err, "--sample does not run tensor-parallel jobs yet (tp = %d): compile for tp = 1", r->tp);
  int lv = job->stages[ls].logits_value;
  const JobValue *lvv = &job->values[lv];
  int64_t T = job->train.seq, V = lvv->dims[lvv->rank - 1];
  if (lvv->rank < 2 || lvv->numel < r->B * T * V) return mpl_errf(err, "--sample: the logits are not [B, T, vocab]");
  int64_t plen = (int64_t)strlen(prompt), ntok = plen;
  if (plen == 0) return mpl_errf(err, "--prompt is empty: sampling starts from the prompt's bytes, give at least one");
  int32_t *toks = mpl_calloc((size_t)(ntok + n + 1), 4);
  float *logits = mpl_malloc((size_t)V * 4);
  int st = toks && logits ? MPL_OK : mpl_errf(err, "out of memory");
  for (int64_t i = 0; i < plen && st == MPL_OK; i++) toks[i] = (unsigned char)prompt[i];
  for (int64_t i = 0; i < ntok && st == MPL_OK; i++)
    if (toks[i] >= V) st = mpl_errf(err, "--prompt: byte %d is outside the vocabulary of %lld", toks[i], (long long)V);
  if (st == MPL_OK) fputs(prompt, out);
  uint64_t stream = init_stream(job->train.seed, "mplrun.sample");
  r->eval = true; /* dropout off */
  for (int64_t k = 0; k < n && st == MPL_OK; k++) {
    int64_t w0 = ntok > T ? ntok - T : 0, wlen = ntok - w0;
    if (sample_fill(r, toks + w0, wlen, idx_in, err) != MPL_OK || sample_forward(r, err) != MPL_OK) {
      st = MPL_ERR;
      break;
    }
    RankCtx *rc = &r->ranks[job->stages[ls].rank];
    const float *row = (const float *)need_ptr(rc, lv, 0, ls, err);
    if (!row) { st = MPL_ERR; break; }
    if ((st = rc->dev.ops->copy_to_host(&rc->dev, logits, row + (wlen - 1) * V, (size_t)V * 4, err)) != MPL_OK) break;
    int32_t t = sample_pick(logits, V, mpl_uniform(stream, (uint64_t)k));
    toks[ntok++] = t;
    put_token(out, t);
    fflush(out);
  }
  r->eval = false;
  if (plen > 0) fputc('\n', out);
  mpl_free(toks);
  mpl_free(logits);
  return st;
}
