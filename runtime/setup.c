/*
 * setup.c — the set-up of a run's ranks: each rank's device, arena and buffers, the
 * params (holders, owners, whole shapes, initial values from the seed), the update
 * phase's state (update.c's upd_init_rank), the data, the kernels, the trace and metrics.
 * train.c calls these in order (mpl_run_init) once it has chosen the backends.
 *
 * Invariants: every pointer a rank will use is resolved here, before its first step; a
 * rank of another process (under MPI) is a shadow: ids, holds[] and loss slots only
 * (init_rank_ids); every failure is a message, and a half-built run frees cleanly.
 */
#include "rank.h"

#include <math.h>
#include <string.h>

#include "mpl_rng.h"

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
int init_rank_ids(MplRun *r, int i, MplErr *err) {
  RankCtx *rc = &r->ranks[i];
  const Job *job = r->job;
  rc->run = r;
  rc->wrank = i;
  mpl_mesh_coords(job->mesh, i, &rc->dpi, &rc->tpi, &rc->rank);
  rc->holds = mpl_calloc((size_t)job->nparams + 1, sizeof(bool));
  rc->mb_loss = mpl_calloc((size_t)r->m, sizeof(double));
  rc->mb_loss_set = mpl_calloc((size_t)r->m, sizeof(bool));
  if (!rc->holds || !rc->mb_loss || !rc->mb_loss_set) return mpl_errf(err, "out of memory");
  for (int p = 0; p < job->nparams; p++) rc->holds[p] = rank_has(r, rc->rank, job->params[p].value);
  return MPL_OK;
}

/* The largest whole value of pipeline rank pr's reduce-scatters and all-gathers: the size
 * of its scratch. */
static size_t rs_bytes(const Job *job, int pr) {
  size_t most = 0;
  for (int st = 0; st < job->nstages; st++) {
    if (job->stages[st].rank != pr) continue;
    for (int k = 0; k < JP__COUNT; k++)
      for (int i = 0; i < job->stages[st].prog[k].nsteps; i++) {
        const JobStep *s = &job->stages[st].prog[k].steps[i];
        if (s->kind != JS_COMM || s->nargs != 2) continue;
        int whole = s->comm == JC_REDUCE_SCATTER ? s->args[1] : s->comm == JC_ALLGATHER ? s->args[0] : -1;
        if (whole >= 0 && value_bytes(job, whole) > most) most = value_bytes(job, whole);
      }
  }
  return most;
}

int init_rank(MplRun *r, int i, MplErr *err) {
  RankCtx *rc = &r->ranks[i];
  const Job *job = r->job;
  if (init_rank_ids(r, i, err) != MPL_OK) return MPL_ERR;
  rc->live = true;
  rc->dev.ops = r->devops;
  rc->dev.tf32 = r->opts.tf32;
  rc->dev.graphs = r->graphs;
  if (r->devops->init(&rc->dev, device_index(r, i), r->opts.threads, err) != MPL_OK) return MPL_ERR;
  if (r->devops->load_kernels && r->devops->load_kernels(&rc->dev, &job->kernels, err) != MPL_OK) return MPL_ERR;
  uint64_t ab = job->ranks[rc->rank].arena_bytes;
  if (r->devops->arena_alloc(&rc->dev, ab, &rc->arena, err) != MPL_OK) return MPL_ERR;
  if (!r->devops->arena_zeroed && r->devops->zero(&rc->dev, rc->arena, (size_t)ab, err) != MPL_OK) return MPL_ERR;
  rc->stats.arena_bytes = ab;
  size_t rsb = rs_bytes(job, rc->rank);
  if (rsb && r->devops->arena_alloc(&rc->dev, rsb, &rc->rs_buf, err) != MPL_OK) return MPL_ERR;
  for (int s = 0; r->devops->ce_reserve && s < job->nstages; s++) { /* the fused cross-entropies' scratch */
    if (job->stages[s].rank != rc->rank) continue;
    for (int p = 0; p < JP__COUNT; p++)
      for (int k = 0; k < job->stages[s].prog[p].nsteps; k++) {
        const JobStep *st = &job->stages[s].prog[p].steps[k];
        if (st->kind != JS_CE) continue;
        MplCe a = mpl_ce_of_step(st);
        if (r->devops->ce_reserve(&rc->dev, &a, err) != MPL_OK) return MPL_ERR;
      }
  }
  if (r->world) rc->comm = mpl_comm_world_rank(r->world, i);
  if (r->mpi) rc->comm = r->mpi;
  int np = job->nparams;
  rc->grad = mpl_calloc((size_t)np + 1, sizeof(float *));
  rc->opt[0] = mpl_calloc((size_t)np + 1, sizeof(float *));
  rc->opt[1] = mpl_calloc((size_t)np + 1, sizeof(float *));
  rc->norm_added = mpl_calloc((size_t)np + 1, sizeof(bool));
  rc->norm_buf = mpl_calloc((size_t)np + 1, sizeof(double));
  rc->world_ranks = mpl_calloc((size_t)r->nworld + 1, sizeof(int));
  rc->group_ranks = mpl_calloc((size_t)r->nworld + 1, sizeof(int));
  if (!rc->grad || !rc->opt[0] || !rc->opt[1] || !rc->norm_added || !rc->norm_buf || !rc->world_ranks ||
      !rc->group_ranks)
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
int init_param_maps(MplRun *r, MplErr *err) {
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
    if (job->values[p->value].dtype != JDT_F32)
      return mpl_errf(err, "param %s is not f32 in the job (params are f32 master weights in every job mplc writes: a "
                      "damaged job?)", p->name);
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
int init_whole_params(MplRun *r, MplErr *err) {
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

/* Elements [begin, end) of a param's initial values: each a pure function of (stream,
 * index), so that any split of the range over threads gives the same bits. */
typedef struct InitPart {
  const JobParam *p;
  uint64_t stream;
  float *buf;
  int64_t begin, end;
} InitPart;

static void *init_part(void *arg) {
  const InitPart *w = arg;
  const JobParam *p = w->p;
  for (int64_t i = w->begin; i < w->end; i++) {
    switch (p->init) {
    case 0: w->buf[i] = 0.0f; break;
    case 1: w->buf[i] = 1.0f; break;
    case 2: w->buf[i] = (float)(mpl_normal(w->stream, (uint64_t)i) * p->init_a); break;
    default: { /* in [a, b): a draw within 2^-25 of 1 rounded up to b in f32 (pass 60: 6 in 4e8) */
      float v = (float)(p->init_a + (p->init_b - p->init_a) * mpl_uniform(w->stream, (uint64_t)i));
      w->buf[i] = v >= (float)p->init_b && p->init_b > p->init_a ? nextafterf((float)p->init_b, (float)p->init_a) : v;
      break;
    }
    }
  }
  return NULL;
}

/* The values on the CPUs this process may use (a normal costs a log and a cosine: GPT-2
 * 124M's 124M of them took 4 s on one thread); a small param, or a failed thread start,
 * stays on this thread. */
enum { INIT_THREADS = 16, INIT_PART_MIN = 1 << 16 };
static void init_values(const JobParam *p, uint64_t stream, float *buf) {
  int nt = mpl_cpus_usable();
  if (nt > INIT_THREADS) nt = INIT_THREADS;
  if (p->numel < (int64_t)nt * INIT_PART_MIN) nt = (int)(p->numel / INIT_PART_MIN);
  if (nt < 2) {
    init_part(&(InitPart){p, stream, buf, 0, p->numel});
    return;
  }
  InitPart w[INIT_THREADS];
  pthread_t th[INIT_THREADS];
  bool started[INIT_THREADS] = {false};
  for (int t = 0; t < nt; t++) {
    w[t] = (InitPart){p, stream, buf, p->numel * t / nt, p->numel * (t + 1) / nt};
    if (t > 0) started[t] = pthread_create(&th[t], NULL, init_part, &w[t]) == 0;
  }
  init_part(&w[0]);
  for (int t = 1; t < nt; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    else init_part(&w[t]);
  }
}

/* Each param's initial values, from the seed's stream of its name: the same on every rank
 * and every mesh. Skipped when --init or --resume gives every param its values. */
int init_params(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  if (r->opts.init_path || r->opts.resume_dir) return MPL_OK;
  for (int pi = 0; pi < job->nparams; pi++) {
    const JobParam *p = &r->wparams[pi];
    float *buf = mpl_malloc((size_t)p->numel * 4 + 4);
    if (!buf) return mpl_errf(err, "out of memory initialising %s", p->name);
    init_values(p, mpl_name_stream(job->train.seed, p->name), buf);
    if (mpl_param_check_values(p, buf, err) != MPL_OK) { /* a value past its type's range: the init's scale is why */
      mpl_free(buf);
      char why[sizeof err->msg], init[80];
      snprintf(why, sizeof why, "%s", err ? err->msg : "");
      if (p->init == 2) snprintf(init, sizeof init, "normal(%g)", p->init_a);
      else snprintf(init, sizeof init, "uniform(%g, %g)", p->init_a, p->init_b);
      return mpl_errf(err, "%s, drawn from its init %s", why, init);
    }
    int st = mpl_run_set_param(r, pi, buf, err);
    mpl_free(buf);
    if (st != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

/* Every token of t is below the vocabulary of each input that has one. */
static int check_vocab(const MplRun *r, const MplTokens *t, MplErr *err) {
  const Job *job = r->job;
  for (int i = 0; i < job->ninputs; i++)
    if (job->inputs[i].hi > 0 && t->max_token >= job->inputs[i].hi) {
      int64_t at = 0; /* the first one */
      while (at < t->ntok && t->tokens[at] < job->inputs[i].hi) at++;
      return mpl_errf(err, "%s: token %d (at position %lld) is out of range for input '%s' (vocabulary %lld; the "
                      "whole file is checked when opened)", t->path, at < t->ntok ? t->tokens[at] : t->max_token,
                      (long long)at, job->inputs[i].name, (long long)job->inputs[i].hi);
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
  if (check_vocab(r, &r->tok, err) != MPL_OK) return MPL_ERR;
  return mpl_loader_init(&r->loader, &r->tok, r->B * r->m * r->dp, job->train.seq, err); /* the step's whole batch */
}

/* Validation: the val file (the job's val, --val replacing it) opened for a token model,
 * with a loader of the step's whole batch, as the training data's. A file too short for
 * one batch is an error (mpl_loader_init's); more batches than it holds wrap to its start,
 * as the training loader does. */
int init_val(MplRun *r, MplErr *err) {
  const TrainConfig *t = &r->job->train;
  const char *path = r->opts.val_path ? r->opts.val_path : t->val_path && t->val_path[0] ? t->val_path : NULL;
  /* no steps: nothing to validate, and the job's file is not read; one given with --val is
     still opened and checked, as --data's is (init_data), then closed */
  if (!path || (r->total_steps == 0 && !r->opts.val_path)) return MPL_OK;
  /* (a run without steps opens no training data: the job's kind or --data says it) */
  if (r->total_steps == 0 ? !r->opts.data_path && t->data_kind != DATA_TOKENS : !r->tokens)
    return mpl_errf(err, "validation (%s): the run's data is synthetic, and validation needs a token model trained "
                    "on token data (data = tokens(...) or --data FILE)", path);
  if (r->total_steps == 0) {
    int st = MPL_OK;
    if (mpl_tokens_open(&r->val_tok, path, err) != MPL_OK || check_vocab(r, &r->val_tok, err) != MPL_OK ||
        mpl_loader_init(&r->val_loader, &r->val_tok, r->B * r->m * r->dp, t->seq, err) != MPL_OK) {
      MplErr why = *err;
      st = mpl_errf(err, "validation data %s", why.msg);
    }
    mpl_tokens_free(&r->val_tok);
    return st;
  }
  if (t->eval_batches < 1 || t->eval_every < 0)
    return mpl_errf(err, "bad job: eval_batches %lld, eval_every %lld", (long long)t->eval_batches, (long long)t->eval_every);
  if (mpl_tokens_open(&r->val_tok, path, err) != MPL_OK || check_vocab(r, &r->val_tok, err) != MPL_OK ||
      mpl_loader_init(&r->val_loader, &r->val_tok, r->B * r->m * r->dp, t->seq, err) != MPL_OK) {
    MplErr why = *err;
    return mpl_errf(err, "validation data %s", why.msg);
  }
  r->validating = true;
  return MPL_OK;
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
    else if (in->dtype == JDT_I32) si[i].kind = MPL_SYNTH_I32, si[i].hi = in->draw_hi > 0 ? (int32_t)in->draw_hi : 2; /* unbounded: 0 or 1 */
    else if (in->dtype == JDT_BOOL) si[i].kind = MPL_SYNTH_BOOL;
    else st = mpl_errf(err, "synthetic data: input '%s' is %s: synthetic examples are f32, i32 or bool", in->name,
                       job_dtype_name(in->dtype));
  }
  int64_t n = job->train.synthetic_n > 0 ? job->train.synthetic_n : 1024;
  /* its examples are drawn whole at the start: more than the machine has would be killed
     while they are drawn (as an arena would, cpu_memory_check; MPL_NO_MEMORY_CHECK=1 too) */
  double bytes = 0;
  for (int i = 0; i < job->ninputs; i++) bytes += (double)n * (double)si[i].row_elems * 4;
  double plannable = st == MPL_OK && bytes >= (64 << 20) ? mpl_mem_plannable() : -1;
  if (plannable >= 0 && bytes > plannable)
    st = mpl_errf(err, "synthetic(%lld): its examples hold %.2f GiB, drawn at the start, but this machine has %.2f GiB "
                  "of memory available: give fewer examples (MPL_NO_MEMORY_CHECK=1 runs it anyway)", (long long)n,
                  bytes / (1 << 30), plannable / 0.95 / (1 << 30));
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

int init_data(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  if (init_roles(r, err) != MPL_OK) return MPL_ERR;
  for (int i = 0; i < job->ninputs; i++) {
    const JobInput *in = &job->inputs[i];
    if (in->value < 0 || in->value >= job->nvalues || in->rank < 1 || in->dims[0] != r->B)
      return mpl_errf(err, "input '%s' is not [%lld, ...] per micro-batch", in->name, (long long)r->B);
  }
  const char *path = r->opts.data_path ? r->opts.data_path : (job->train.data_kind == 1 ? job->train.data_path : NULL);
  /* a run of no steps (one that only samples, or saves the params it was given) reads no
     data: the job's file is not opened (it may not be there, say beside a checkpoint moved
     elsewhere); one given with --data still is, and checked */
  if (path && r->total_steps == 0 && !r->opts.data_path) return MPL_OK;
  if (path) return init_tokens(r, path, err);
  return init_synth(r, err);
}

int check_job(const Job *job, MplErr *err) {
  if (job->mesh.dp < 1 || job->mesh.tp < 1 || (int64_t)job->mesh.dp * job->mesh.tp * job->mesh.pp > MPL_MAX_WORLD)
    return mpl_errf(err, "bad job: mesh dp = %d, tp = %d, pp = %d", job->mesh.dp, job->mesh.tp, job->mesh.pp);
  if (job->train.batch % (job->train.microbatches * job->mesh.dp))
    return mpl_errf(err, "bad job: batch %lld does not divide into %lld micro-batches on %d replicas",
                    (long long)job->train.batch, (long long)job->train.microbatches, job->mesh.dp);
  if (job->mesh.pp < 1 || job->train.microbatches < 1 || job->train.batch % job->train.microbatches)
    return mpl_errf(err, "bad job: pp = %d, microbatches = %lld", job->mesh.pp, (long long)job->train.microbatches);
  for (int s = 0; s < job->nstages; s++)
    if (job->stages[s].rank < 0 || job->stages[s].rank >= job->mesh.pp)
      return mpl_errf(err, "bad job: stage %d on rank %d", s, job->stages[s].rank);
  for (int x = 0; x < job->nxfers; x++)
    if (job->xfers[x].src < 0 || job->xfers[x].src >= job->nstages || job->xfers[x].dst < 0 ||
        job->xfers[x].dst >= job->nstages)
      return mpl_errf(err, "bad job: transfer %d between stages %d and %d", x, job->xfers[x].src, job->xfers[x].dst);
  return MPL_OK;
}

int init_kernels(MplRun *r, MplErr *err) {
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

int init_outputs(MplRun *r, MplErr *err) {
  const MplRunOpts *o = &r->opts;
  if (o->ckpt_dir && mpl_ckpt_dir_check(o->ckpt_dir, o->resume_dir, err) != MPL_OK) return MPL_ERR;
  if (o->ckpt_dir && mpl_ckpt_lock(o->ckpt_dir, &r->ckpt_lock, err) != MPL_OK) return MPL_ERR;
  if (o->save_path && mpl_out_file_check(o->save_path, "--save", err) != MPL_OK) return MPL_ERR;
  if (o->trace_path && mpl_out_file_check(o->trace_path, "--trace", err) != MPL_OK) return MPL_ERR;
  if (o->profile_path && mpl_out_file_check(o->profile_path, "--profile", err) != MPL_OK) return MPL_ERR;
  if (o->metrics_path && mpl_out_file_check(o->metrics_path, "--metrics", err) != MPL_OK) return MPL_ERR;
  return MPL_OK;
}

/* --save, --checkpoint: the buffer their files are written through, one whole param at a
 * time, taken before training (a run that trains must be able to write what it trained);
 * after init_whole_params, whose sizes it needs. */
int init_write_buf(MplRun *r, MplErr *err) {
  if (!r->lead || (!r->opts.save_path && !r->opts.ckpt_dir)) return MPL_OK;
  int64_t most = 1;
  for (int p = 0; p < r->job->nparams; p++)
    if (r->wparams[p].numel > most) most = r->wparams[p].numel;
  if (!(r->write_buf = mpl_malloc((size_t)most * 4 + 4)))
    return mpl_errf(err, "out of memory for the buffer --save and --checkpoint write through (%.1f MiB, the largest "
                    "param)", (double)most * 4 / 1048576.0);
  return MPL_OK;
}

int init_observability(MplRun *r, MplErr *err) {
  if (r->opts.trace_path) {
    if (mpl_trace_init(&r->trace, r->nworld, err) != MPL_OK) return MPL_ERR;
    mpl_trace_set_mesh(&r->trace, r->tp, r->pp);
    r->tracing = true;
  }
  if (r->opts.metrics_path && r->lead) {
    int64_t keep = r->opts.resume_dir ? r->step : 0; /* a resumed run continues the file */
    if (mpl_metrics_open(&r->metrics, r->opts.metrics_path, keep, err) != MPL_OK) return MPL_ERR;
    r->metrics_open = true;
  }
  return MPL_OK;
}

void free_rank(RankCtx *rc) {
  mpl_shadow_free(rc);
  upd_free_rank(rc); /* grad scratch, opt, tmp and norm_dev are carved from its state_mem */
  mpl_free(rc->opt[0]);
  mpl_free(rc->opt[1]);
  mpl_free(rc->holds);
  mpl_free(rc->grad);
  mpl_free(rc->norm_added);
  mpl_free(rc->norm_buf);
  mpl_free(rc->world_ranks);
  mpl_free(rc->group_ranks);
  mpl_free(rc->mb_loss);
  mpl_free(rc->mb_loss_set);
  mpl_free(rc->stage_buf);
  mpl_free(rc->argv);
  mpl_free(rc->prof);
  if (rc->rs_buf && rc->dev.ops) rc->dev.ops->arena_free(&rc->dev, rc->rs_buf);
  rc->rs_buf = NULL;
  mpl_free(rc->ptr);
  if (rc->dev.ops) {
    if (rc->arena) rc->dev.ops->arena_free(&rc->dev, rc->arena);
    rc->dev.ops->free(&rc->dev);
  }
}
