/*
 * exec.c — one rank's step: its instruction stream run in order. The pipeline part
 * (fwd, bwd_b, bwd_w: the stage's programs of kernels, products and tp collectives;
 * send, recv: the transfers between pipeline ranks), then the update phase, handed to
 * update.c; and a validation pass, the forward part of the same stream (rank_eval).
 * Set-up is setup.c's, the loop over steps and the rank threads train.c's.
 *
 * The world is dp x tp x pp ranks: world rank w = (replica * tp + tp_index) * pp + pipeline
 * rank. The ranks of one replica and tp index form a pipeline (they exchange
 * activations); the tp ranks of one pipeline rank run the same programs on their parts
 * of the split values (the collectives of the job's JS_COMM steps); the replicas run on
 * different rows of the batch.
 *
 * Invariants:
 *  - each rank owns one arena (JobRank.arena_bytes); value v of micro-batch j lives at
 *    offset[v*m + j]; params and gradient accumulators at their slot-0 offset;
 *  - nothing depends on timing: gradients of one use are summed by the programs in
 *    micro-batch order, and every later sum is in an order the job fixes (update.c), so
 *    the same job, seed and --threads give the same bits whatever the schedule;
 *  - a rank that fails records its message (train.c: the first one wins) and aborts the
 *    communicator, so every rank blocked in a recv wakes with an error;
 *  - on a device whose memory the host cannot touch (ops->device_memory: cuda) every
 *    host access goes through copy_to_host / copy_from_host, losses are read at the end
 *    of the step, and each rank's step ends with ops->sync.
 */
#include "rank.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpl_rng.h"

void trace_comm(RankCtx *rc, const char *name, double t0) {
  MplRun *r = rc->run;
  if (r->tracing && name) mpl_trace_event(&r->trace, rc->wrank, name, "comm", t0, mpl_trace_now(&r->trace) - t0);
}


/* ---- MPL_SHADOW_CHECK=1: an independent check of the memory plan (pass 59) ----------------
 * A test switch (tests/e2e/plan_shadow.sh), CPU devices only. The plan's lifetimes are
 * mplc's; this watches what the runtime really touches: each 64-byte granule of the arena
 * records the (root value, micro-batch) that touched it last (a value and the reshapes
 * aliasing it share a root), and a (value, mb) touched again in the same pass after another
 * key took one of its granules was overwritten while live: "SHADOW ..." on stderr.
 * MPL_SHADOW_POISON=1 also fills every value but the params, gradients and inputs with
 * 0xFF bytes (NaN) at the start of each step, evaluation and sample, so a value read before it is written in the
 * pass (a GEMM with beta = 1 into a buffer nobody set) shows in the results;
 * MPL_SHADOW_POISON_RANGE=LO-HI poisons those value ids only (for bisecting). With mplc's
 * MPL_PLAN_SHUFFLE=SEED (plan.c), other pairs of values share bytes. */
typedef struct Shadow {
  int64_t *owner;   /* [granules] key or -1 */
  uint8_t *touched; /* [nvalues * m] */
  int *root;        /* [nvalues] */
  size_t ng;
  int reports;
  bool poison;
} Shadow;
static int sh_find(int *r, int v) { while (r[v] != v) v = r[v] = r[r[v]]; return v; }
static bool sh_persistent(const Job *job, int v) { return job->values[v].kind == JV_PARAM || job->values[v].kind == JV_GRAD; }
/* The switches, read once for all rank threads (pthread_once: the threads start together). */
static bool sh_on, sh_poison_all = true;
static int sh_lo, sh_hi = 1 << 30;
static pthread_once_t sh_once = PTHREAD_ONCE_INIT;
static void sh_read_env(void) {
  const char *e = getenv("MPL_SHADOW_CHECK"), *r = getenv("MPL_SHADOW_POISON_RANGE");
  sh_on = e && *e == '1';
  if (r && sscanf(r, "%d-%d", &sh_lo, &sh_hi) == 2) sh_poison_all = false;
}

static Shadow *sh_get(RankCtx *rc) {
  pthread_once(&sh_once, sh_read_env);
  if (!sh_on || rc->dev.ops->device_memory) return NULL;
  if (rc->shadow) return rc->shadow;
  const Job *job = rc->run->job;
  Shadow *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->ng = job->ranks[rc->rank].arena_bytes / 64 + 2;
  s->owner = malloc(sizeof(int64_t) * s->ng);
  s->touched = calloc((size_t)job->nvalues * rc->run->m + 1, 1);
  s->root = malloc(sizeof(int) * (size_t)(job->nvalues + 1));
  if (!s->owner || !s->touched || !s->root) {
    free(s->owner), free(s->touched), free(s->root), free(s);
    return NULL;
  }
  for (size_t i = 0; i < s->ng; i++) s->owner[i] = -1;
  for (int v = 0; v < job->nvalues; v++) s->root[v] = v;
  for (int st = 0; st < job->nstages; st++)
    for (int k = 0; k < JP__COUNT; k++) {
      const JobProgram *pg = &job->stages[st].prog[k];
      for (int i = 0; i < pg->nsteps; i++)
        if (pg->steps[i].kind == JS_ALIAS) {
          int a = sh_find(s->root, pg->steps[i].args[0]), b = sh_find(s->root, pg->steps[i].args[1]);
          if (a != b) s->root[a < b ? b : a] = a < b ? a : b;
        }
    }
  const char *pe = getenv("MPL_SHADOW_POISON");
  s->poison = pe && *pe == '1';
  rc->shadow = s;
  return s;
}
void mpl_shadow_free(RankCtx *rc) {
  Shadow *s = rc->shadow;
  if (!s) return;
  free(s->owner), free(s->touched), free(s->root), free(s);
  rc->shadow = NULL;
}

/* Made by sh_begin at a pass's start; off (rc->shadow NULL) it costs the executor's loop a
 * pointer test per step, as the callers test rc->shadow first. */
static void sh_touch(RankCtx *rc, int v, int mb, const char *where) {
  Shadow *s = rc->shadow;
  if (!s) return;
  const Job *job = rc->run->job;
  int m = rc->run->m, r = sh_find(s->root, v);
  uint8_t *p = vptr(rc, v, mb);
  if (!p) return;
  int kmb = sh_persistent(job, r) ? 0 : mb;
  int64_t key = (int64_t)r * m + kmb;
  size_t off = (size_t)(p - (uint8_t *)rc->arena), bytes = value_bytes(job, v);
  if (off % 64 && s->reports++ < 20)
    fprintf(stderr, "SHADOW rank %d: value %d at offset %zu not 64-aligned\n", rc->wrank, v, off);
  for (size_t g = off / 64; g < (off + bytes + 63) / 64 && g < s->ng; g++) {
    int64_t o = s->owner[g];
    if (o >= 0 && o != key && s->touched[key] && s->reports++ < 20)
      fprintf(stderr, "SHADOW rank %d (%s): value %d (root %d) mb %d at [%zu,+%zu): granule %zu was taken by value %lld mb %lld since its last use\n",
              rc->wrank, where, v, r, mb, off, bytes, g, (long long)(o / m), (long long)(o % m));
    s->owner[g] = key;
  }
  s->touched[key] = 1;
}
/* The start of a pass: non-persistent values are not live (and optionally poisoned). */
static void sh_begin(RankCtx *rc) {
  Shadow *s = sh_get(rc);
  if (!s) return;
  const Job *job = rc->run->job;
  int m = rc->run->m;
  for (int v = 0; v < job->nvalues; v++) {
    if (sh_persistent(job, v)) continue;
    for (int j = 0; j < m; j++) {
      s->touched[(size_t)v * m + j] = 0;
      uint8_t *p = vptr(rc, v, j);
      int rt = sh_find(s->root, v); /* an alias of a param or an input holds its bytes */
      bool in_range = sh_poison_all || (v >= sh_lo && v <= sh_hi);
      if (s->poison && p && in_range && job->values[rt].kind != JV_INPUT && !sh_persistent(job, rt))
        memset(p, 0xFF, value_bytes(job, v));
    }
  }
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
  /* the micro-batch over all replicas (the rows it reads) and the tp index: dropout's
   * masks (mpl_rng.h) */
  int64_t scalars[MPL_KERNEL_SCALARS] = {(int64_t)r->job->train.seed, step,
                                          r->eval ? MPL_MB_EVAL : (int64_t)rc->dpi * r->m + mb, rc->tpi};
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

/* A partial sum (in, whole shape) to this rank's part of the sum (out): every tp index's
 * part copied to its chunk of the scratch (chunk-major), reduce-scattered (each index
 * sums its own chunk, in rank order: the bits of an all-reduce), then copied out. */
static int tp_reduce_scatter(RankCtx *rc, const JobStep *s, void *out, const void *in, const int *ranks, int stage,
                             MplErr *err) {
  const Job *job = rc->run->job;
  const JobValue *vi = &job->values[s->args[1]];
  int tp = rc->run->tp;
  size_t part = value_bytes(job, s->args[0]);
  uint8_t *scratch = rc->rs_buf; /* sized at set-up for the rank's largest (rs_bytes) */
  if (vi->dtype != JDT_F32) return rank_fail(rc, err, "stage %d: collectives of non-f32 values are not supported", stage);
  for (int t = 0; t < tp; t++)
    if (shard_copy_dev(rc, (void *)in, scratch + (size_t)t * part, vi->dims, vi->rank, s->axis, s->groups, tp, t, 4, true,
                       err) != MPL_OK)
      return MPL_ERR;
  if (rc->comm->ops->reduce_scatter_sum_f32(rc->comm, ranks, tp, (float *)scratch, (size_t)vi->numel) != MPL_OK)
    return rank_fail(rc, err, "stage %d: tp reduce-scatter: %s", stage, rc->comm->err.msg);
  return rc->dev.ops->copy_device(&rc->dev, out, scratch + (size_t)rc->tpi * part, part, err);
}

/* This rank's part (in) to the whole value (out): the parts all-gathered chunk-major in
 * the scratch, then each copied to its place. */
static int tp_allgather(RankCtx *rc, const JobStep *s, void *out, const void *in, const int *ranks, int stage,
                        MplErr *err) {
  const Job *job = rc->run->job;
  const JobValue *vo = &job->values[s->args[0]];
  int tp = rc->run->tp;
  size_t part = value_bytes(job, s->args[1]), elem = dtype_bytes(vo->dtype);
  uint8_t *scratch = rc->rs_buf;
  if (rc->dev.ops->copy_device(&rc->dev, scratch + (size_t)rc->tpi * part, in, part, err) != MPL_OK) return MPL_ERR;
  if (rc->comm->ops->allgather(rc->comm, ranks, tp, scratch, (size_t)vo->numel, elem) != MPL_OK)
    return rank_fail(rc, err, "stage %d: tp all-gather: %s", stage, rc->comm->err.msg);
  for (int t = 0; t < tp; t++)
    if (shard_copy_dev(rc, out, scratch + (size_t)t * part, vo->dims, vo->rank, s->axis, s->groups, tp, t, elem, false,
                       err) != MPL_OK)
      return MPL_ERR;
  return MPL_OK;
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
  int *ranks = rc->group_ranks, n = tp_group(rc, ranks);
  if (!rc->dev.ops->copy_device) return rank_fail(rc, err, "tp collectives: the %s device cannot copy", rc->dev.ops->name);
  switch (s->comm) {
  case JC_TP_ENTER: return out != in ? rc->dev.ops->copy_device(&rc->dev, out, in, in_bytes, err) : MPL_OK;
  case JC_TP_SLICE:
    return shard_copy_dev(rc, in, out, vi->dims, vi->rank, s->axis, s->groups, n, rc->tpi, dtype_bytes(vi->dtype), true, err);
  case JC_REDUCE_SCATTER: return tp_reduce_scatter(rc, s, out, in, ranks, stage, err);
  case JC_ALLGATHER: return tp_allgather(rc, s, out, in, ranks, stage, err);
  case JC_ALLREDUCE:
    if (vo->dtype != JDT_F32) return rank_fail(rc, err, "stage %d: collectives of non-f32 values are not supported", stage);
    if (out != in && rc->dev.ops->copy_device(&rc->dev, out, in, in_bytes, err) != MPL_OK) return MPL_ERR;
    if (rc->comm->ops->allreduce_sum_f32(rc->comm, ranks, n, out, (size_t)vo->numel) != MPL_OK)
      return rank_fail(rc, err, "stage %d: tp all-reduce: %s", stage, rc->comm->err.msg);
    return MPL_OK;
  default: return rank_fail(rc, err, "stage %d: unknown collective %d", stage, s->comm);
  }
}

/* JS_SDPA, JS_SDPA_BWD: the fused attention through the device's sdpa ops. */
static int run_sdpa(RankCtx *rc, const JobStep *s, int stage, int mb, MplErr *err) {
  bool bwd = s->kind == JS_SDPA_BWD;
  float *p[9];
  for (int i = 0; i < s->nargs && i < 9; i++)
    if (!(p[i] = need_ptr(rc, s->args[i], mb, stage, err))) return MPL_ERR;
  if (!(bwd ? rc->dev.ops->sdpa_bwd : rc->dev.ops->sdpa))
    return rank_fail(rc, err, "stage %d: the %s device has no fused attention", stage, rc->dev.ops->name);
  MplSdpa a = {.B = s->batch, .H = s->heads, .Hkv = s->kv_heads, .T = s->M, .S = s->N, .hs = s->K, .hv = s->hv,
               .scale = (float)s->alpha, .causal = s->causal, .bf16 = s->prec == PREC_BF16, .tf32 = s->prec == PREC_TF32,
               .in16 = s->in16, .q = p[0], .k = p[1], .v = p[2], .out = p[3], .lse = p[4]};
  if (s->in16) /* the inputs are bf16 (job_validate checked all of them) */
    a.q16 = (const uint16_t *)(void *)p[0], a.k16 = (const uint16_t *)(void *)p[1], a.v16 = (const uint16_t *)(void *)p[2];
  if (!bwd) return rc->dev.ops->sdpa(&rc->dev, &a, err);
  a.dout = p[5], a.dq = p[6], a.dk = p[7], a.dv = p[8];
  if (s->in16) a.out16 = (const uint16_t *)(void *)p[3], a.dout16 = (const uint16_t *)(void *)p[5];
  return rc->dev.ops->sdpa_bwd(&rc->dev, &a, err);
}

MplCe mpl_ce_of_step(const JobStep *s) {
  return (MplCe){.N = s->M, .K = s->K, .V = s->N, .chunk = s->chunk, .tb = s->tb, .bf16 = s->prec == PREC_BF16,
                 .in16 = s->in16};
}

/* JS_CE: the fused cross-entropy through the device's ce op (loss, dx1, dw1). */
static int run_ce(RankCtx *rc, const JobStep *s, int stage, int mb, MplErr *err) {
  float *p[6];
  for (int i = 0; i < 6; i++)
    if (!(p[i] = need_ptr(rc, s->args[i], mb, stage, err))) return MPL_ERR;
  if (!rc->dev.ops->ce)
    return rank_fail(rc, err, "stage %d: the %s device has no fused cross-entropy yet: compile with --no-fused-ce",
                     stage, rc->dev.ops->name);
  MplCe a = mpl_ce_of_step(s);
  a.x = p[0], a.w = p[1], a.targets = (const int32_t *)(void *)p[2], a.loss = p[3], a.dx = p[4], a.dw = p[5];
  if (s->in16) a.x16 = (const uint16_t *)(void *)p[0], a.w16 = (const uint16_t *)(void *)p[1];
  return rc->dev.ops->ce(&rc->dev, &a, err);
}

/* JS_EMB_GRAD: an embedding's gradient through the device's emb_grad op. */
static int run_emb_grad(RankCtx *rc, const JobStep *s, int stage, int mb, MplErr *err) {
  float *p[3];
  for (int i = 0; i < 3; i++)
    if (!(p[i] = need_ptr(rc, s->args[i], mb, stage, err))) return MPL_ERR;
  if (!rc->dev.ops->emb_grad)
    return rank_fail(rc, err, "stage %d: the %s device has no embedding gradient", stage, rc->dev.ops->name);
  MplEmbGrad a = {.M = s->M, .N = s->N, .K = s->K, .idx = (const int32_t *)(void *)p[0], .dy = p[1], .out = p[2]};
  return rc->dev.ops->emb_grad(&rc->dev, &a, err);
}

static int run_step_op(RankCtx *rc, const JobStep *s, int stage, int mb, int64_t step, MplErr *err) {
  const Job *job = rc->run->job;
  switch (s->kind) {
  case JS_KERNEL: return run_kernel_step(rc, s, stage, mb, step, err);
  case JS_GEMM: {
    float *a = need_ptr(rc, s->args[0], mb, stage, err), *b = a ? need_ptr(rc, s->args[1], mb, stage, err) : NULL;
    float *c = b ? need_ptr(rc, s->args[2], mb, stage, err) : NULL;
    if (!c) return MPL_ERR;
    /* batch 0's offsets (a broadcast product is one step per batch) apply on every device, in
       elements of the operands' type (s->in16: bf16, two bytes) */
    size_t ab = s->in16 ? 2 : 4;
    return rc->dev.ops->gemm(&rc->dev, s, (const char *)a + (size_t)s->off_a * ab, (const char *)b + (size_t)s->off_b * ab,
                             c + s->off_c, err);
  }
  case JS_ALIAS: return MPL_OK; /* the plan gave both values one buffer */
  case JS_SDPA: case JS_SDPA_BWD: return run_sdpa(rc, s, stage, mb, err);
  case JS_CE: return run_ce(rc, s, stage, mb, err);
  case JS_EMB_GRAD: return run_emb_grad(rc, s, stage, mb, err);
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

/* After a kernel step: a run-time check it computed (a JV_CHECK value, see job.h) that
 * counted bad elements stops the run with the check's message. */
static int run_checks(RankCtx *rc, const JobStep *s, int stage, int mb, MplErr *err) {
  const Job *job = rc->run->job;
  for (int i = 0; i < s->nargs; i++) {
    int v = s->args[i];
    if (job->values[v].kind != JV_CHECK) continue;
    int32_t bad = 0;
    const void *p = need_ptr(rc, v, mb, stage, err);
    if (!p || rc->dev.ops->copy_to_host(&rc->dev, &bad, p, sizeof bad, err) != MPL_OK) return MPL_ERR;
    if (!bad) continue;
    const char *what = "a run-time check failed";
    for (int c = 0; c < job->nchecks; c++)
      if (job->checks[c].value == v) what = job->checks[c].what;
    return rank_fail(rc, err, "%s (%d element%s, micro-batch %d)", what, bad, bad == 1 ? "" : "s", mb);
  }
  return MPL_OK;
}

int run_prog(RankCtx *rc, int stage, int which, int mb, int64_t step, MplErr *err) {
  return run_prog_until(rc, stage, which, mb, step, rc->run->job->stages[stage].prog[which].nsteps, err);
}

int run_prog_until(RankCtx *rc, int stage, int which, int mb, int64_t step, int end, MplErr *err) {
  const JobProgram *pg = &rc->run->job->stages[stage].prog[which];
  bool timed = rc->prof_on; /* --profile (measure.c) */
  for (int i = 0; i < pg->nsteps && i < end; i++) {
    const JobStep *s = &pg->steps[i];
    int need = s->kind == JS_GEMM ? 3 : (s->kind == JS_ACCUM || s->kind == JS_ALIAS) ? 2 : s->kind == JS_SDPA ? 5
             : s->kind == JS_SDPA_BWD ? 9 : s->kind == JS_CE ? 6 : s->kind == JS_EMB_GRAD ? 3 : 0;
    if (s->nargs < need) return rank_fail(rc, err, "stage %d: step %d has %d arguments", stage, i, s->nargs);
    double t0 = timed ? now_s() : 0;
    for (int a = 0; rc->shadow && a < s->nargs; a++) sh_touch(rc, s->args[a], mb, "step");
    if (run_step_op(rc, s, stage, mb, step, err) != MPL_OK) return MPL_ERR;
    if (s->kind == JS_KERNEL && run_checks(rc, s, stage, mb, err) != MPL_OK) return MPL_ERR;
    if (timed && measure_step(rc, s, which, t0, err) != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

/* After FWD on the loss stage: the micro-batch's loss. */
static int read_loss(RankCtx *rc, int stage, int mb, MplErr *err) {
  int lv = rc->run->job->stages[stage].loss_value;
  if (lv < 0) return MPL_OK;
  sh_touch(rc, lv, mb, "loss");
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
    sh_touch(rc, v, ins->mb, sending ? "send" : "recv");
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

/* Every micro-batch's inputs of this rank for `step`: token rows from `loader` (at its
 * position), or synthetic examples. */
static int fill_inputs(RankCtx *rc, const MplLoader *loader, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  const Job *job = r->job;
  for (int i = 0; i < job->ninputs; i++) {
    const JobInput *in = &job->inputs[i];
    if (!vptr(rc, in->value, 0)) continue;
    size_t bytes = value_bytes(job, in->value);
    for (int j = 0; j < r->m; j++) {
      void *dst = need_ptr(rc, in->value, j, -1, err);
      if (!dst) return MPL_ERR;
      sh_touch(rc, in->value, j, "input");
      if (r->tokens) {
        int32_t *buf = (int32_t *)rc->stage_buf;
        mpl_loader_rows(loader, (rc->dpi * r->m + j) * r->B, r->B, r->role[i] == 0 ? buf : NULL,
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
    sh_touch(rc, v, 0, "zero");
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
  case JI_BWD_B: return run_prog(rc, ins->stage, JP_BWD_B, ins->mb, step, err);
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

/* Device memory: waits for the device, then reads the losses of the step's FWDs (not after
 * a sampling pass: it runs micro-batch 0 alone, and no loss is read). */
static int end_step_on_device(RankCtx *rc, MplErr *err) {
  const JobRank *jr = &rc->run->job->ranks[rc->rank];
  if (rc->dev.ops->sync(&rc->dev, err) != MPL_OK) return MPL_ERR;
  if (rc->dev.ops->step_done) rc->dev.ops->step_done(&rc->dev);
  if (rc->run->sampling) return MPL_OK;
  for (int i = 0; i < jr->nins; i++)
    if (jr->ins[i].kind == JI_FWD && read_loss(rc, jr->ins[i].stage, jr->ins[i].mb, err) != MPL_OK) return MPL_ERR;
  return MPL_OK;
}

int rank_step(RankCtx *rc, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  const JobRank *jr = &r->job->ranks[rc->rank];
  double t_start = now_s();
  memset(rc->comm_counts, 0, sizeof rc->comm_counts);
  for (int j = 0; j < r->m; j++) rc->mb_loss_set[j] = false;
  double ts0 = r->tracing ? mpl_trace_now(&r->trace) : 0;
  sh_begin(rc);
  if (zero_grads(rc, err) != MPL_OK || fill_inputs(rc, &r->loader, step, err) != MPL_OK) return MPL_ERR;
  if (r->tracing) mpl_trace_event(&r->trace, rc->wrank, "setup", "setup", ts0, mpl_trace_now(&r->trace) - ts0);
  double busy = 0, compute = 0, msg = 0, update = 0, upd0 = -1;
  bool counted = step > r->first_step || r->total_steps - r->first_step <= 1;
  rc->prof_on = r->profiling && counted;
  for (int i = 0, k = 1; i < jr->nins; i += k) {
    const JobIns *ins = &jr->ins[i];
    bool fail_here = rc->wrank == r->opts.fail_rank && step == r->opts.fail_step;
    if (fail_here && i == r->opts.fail_ins)
      return rank_fail(rc, err, "injected failure at instruction %d (%s)", i, job_ins_name(ins->kind));
    /* a run of NORM_ADDs, CLIPs or UPDATEs: one multi-tensor op where the device has it
       (never past an injected failure's instruction) */
    k = job_ins_is_update(ins->kind) ? upd_list_len(rc, ins, jr->nins - i) : 1;
    if (fail_here && r->opts.fail_ins > i && r->opts.fail_ins < i + k) k = r->opts.fail_ins - i;
    double t0 = now_s(), tr0 = r->tracing ? mpl_trace_now(&r->trace) : 0;
    if ((k > 1 ? upd_run_list(rc, ins, k, step, err) : run_ins(rc, ins, step, err)) != MPL_OK) return MPL_ERR;
    double t1 = now_s();
    if (ins_is_busy(ins->kind)) busy += t1 - t0;
    bool upd = job_ins_is_update(ins->kind), last = i + k == jr->nins || !job_ins_is_update(jr->ins[i + k].kind);
    *(upd ? &update : ins->kind == JI_SEND || ins->kind == JI_RECV ? &msg : &compute) += t1 - t0;
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
  rc->prof_on = false;
  rc->step_end = now_s();
  rc->step_counted = counted;
  if (counted) {
    rc->stats.busy_s += busy;
    rc->stats.wall_s += rc->step_end - t_start;
    rc->stats.compute_s += compute, rc->stats.msg_s += msg, rc->stats.update_s += update;
    rc->stats.steps++;
  }
  return MPL_OK;
}

/* ---- an evaluation pass (validation) ---------------------------------------------------
 * Batch r->eval_batch of the val data (the rows the training loader reads at that step
 * from position 0) through the forward part of the rank's stream: FWD and the transfers of
 * activations (JobXfer.grad == 0), in stream order; BWD_B, BWD_W, gradient transfers and
 * the update phase are skipped, so params, optimizer state, gradients (zeroed by the next
 * step anyway) and the training loader are untouched. Kernels get MPL_MB_EVAL (r->eval):
 * dropout is off, and no training step's masks are drawn.
 *
 * It cannot deadlock: the full streams run (the schedule is proven), so the graph of
 * their instructions, with program order on each rank and an edge from each send to its
 * recv, has no cycle. The forward part keeps a subset of those instructions in the same
 * order on each rank, and every activation recv's send (its src stage's FWD comes before
 * it on the sender): its edges are a subset of the full graph's paths, still without a
 * cycle. Sends are eager, so a rank only ever waits in a recv whose send is reached. The
 * tp ranks of a pipeline rank run the same stream, so their collectives inside FWD still
 * pair up; replicas share no forward message. Every send of the pass is received in it
 * (same tags as a step's), so no message is left over for the next step.
 *
 * A buffer's contents in the pass are what the step would compute: the plan only reuses a
 * buffer after its value's last use in the full stream, and the pass runs fewer writers in
 * the same order. The step's communication counts (--comm-stats) and busy times are kept
 * as the last training step left them. */
static bool ins_is_forward(const Job *job, const JobIns *ins) {
  if (ins->kind == JI_FWD) return true;
  return (ins->kind == JI_SEND || ins->kind == JI_RECV) && !job->xfers[ins->xfer].grad;
}

/* The forward part of this rank's stream, in order: every micro-batch's, or while
 * sampling micro-batch 0's alone, the fused cross-entropy's stage stopping before step
 * r->sample_until (rank_sample); then the device's wait. The step's counts are kept. */
static int run_forward_part(RankCtx *rc, MplErr *err) {
  MplRun *r = rc->run;
  const JobRank *jr = &r->job->ranks[rc->rank];
  MplCommCount counts[MPL_COMM__COUNT];
  memcpy(counts, rc->comm_counts, sizeof counts);
  int st = MPL_OK;
  for (int i = 0; i < jr->nins && st == MPL_OK; i++) {
    const JobIns *ins = &jr->ins[i];
    if (!ins_is_forward(r->job, ins) || (r->sampling && ins->mb != 0)) continue;
    if (r->sampling && ins->kind == JI_FWD && ins->stage == r->sample_stage)
      st = run_prog_until(rc, ins->stage, JP_FWD, 0, r->step, r->sample_until, err);
    else
      st = run_ins(rc, ins, r->step, err);
  }
  if (st == MPL_OK && rc->dev.ops->sync) st = end_step_on_device(rc, err);
  memcpy(rc->comm_counts, counts, sizeof counts);
  return st;
}

int rank_eval(RankCtx *rc, MplErr *err) {
  MplRun *r = rc->run;
  for (int j = 0; j < r->m; j++) rc->mb_loss_set[j] = false;
  double ts0 = trace_t(rc);
  MplLoader batch = r->val_loader;
  batch.pos = mpl_loader_pos_at_step(&batch, r->eval_batch);
  sh_begin(rc);
  int st = fill_inputs(rc, &batch, r->step, err);
  if (st == MPL_OK) st = run_forward_part(rc, err);
  if (r->tracing) mpl_trace_event(&r->trace, rc->wrank, "eval", "eval", ts0, mpl_trace_now(&r->trace) - ts0);
  return st;
}

/* ---- a sampling pass (mpl_run_sample) ---------------------------------------------------
 * One token's forward: micro-batch 0's inputs get the window (idx row 0: r->sample_win,
 * zero padded; everything else 0), then the rank's FWDs and activation transfers of
 * micro-batch 0 run in stream order, as rank_eval runs every micro-batch's (the same
 * argument holds for the subset: no deadlock, each buffer holds what the step computes).
 * Replica 0 alone runs (replicas share no forward message); its tp ranks all run, so
 * their collectives pair up. The fused cross-entropy's stage stops before that step
 * (sample_until), where its operands are read: its later steps may reuse their buffers.
 * A rank whose stage holds the logits keeps them to the end of the pass: nothing after
 * micro-batch 0's last FWD runs (run_forward_part, rank_eval's walk). */
static int sample_inputs(RankCtx *rc, MplErr *err) {
  MplRun *r = rc->run;
  const Job *job = r->job;
  for (int i = 0; i < job->ninputs; i++) {
    int v = job->inputs[i].value;
    if (!vptr(rc, v, 0)) continue;
    size_t bytes = value_bytes(job, v);
    memset(rc->stage_buf, 0, bytes);
    if (i == r->sample_idx) memcpy(rc->stage_buf, r->sample_win, (size_t)r->sample_wlen * 4);
    if (rc->dev.ops->copy_from_host(&rc->dev, vptr(rc, v, 0), rc->stage_buf, bytes, err) != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

int rank_sample(RankCtx *rc, MplErr *err) {
  if (rc->dpi != 0) return MPL_OK;
  sh_begin(rc);
  int st = sample_inputs(rc, err);
  return st == MPL_OK ? run_forward_part(rc, err) : st;
}
