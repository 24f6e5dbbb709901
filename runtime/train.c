/*
 * train.c — a run from start to end: the backends chosen (the device kind, the process
 * layout: threads or one rank per process under mpirun, the communicators), the ranks set
 * up (setup.c), checkpoints and --init read, then the steps: each rank's thread runs its
 * stream (exec.c) while the main thread waits at the step barrier, then evaluates the
 * val loss when it is due (the ranks' forward parts, through the same barrier), reports
 * the loss, writes metrics and checkpoints, and stops a diverging run.
 *
 * Invariants:
 *  - between steps the rank threads wait, so the main thread may read and write any
 *    rank's arena (checkpoints, --init, sampling);
 *  - a rank that fails records its message (the first one wins) and aborts the
 *    communicator; the main thread waits for every rank before it looks: no hang;
 *  - under mpirun (opts.comm: comm_mpi.c) this process runs world rank comm->rank alone,
 *    on its main thread; whatever the main thread reads of other ranks goes through
 *    messages to world rank 0 (TAG_MAIN), which alone prints and writes files;
 *  - nothing non-finite is written: a non-finite loss stops the run before its
 *    checkpoint, and checkpoint.c refuses non-finite tensors.
 */
#include "rank.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void mpl_run_opts_default(MplRunOpts *o) {
  *o = (MplRunOpts){.device_kind = "cpu", .threads = 1, .steps = -1, .fail_rank = -1};
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
  if (r->dworld) r->devops->world_abort(r->dworld, e->msg);
}

/* The pass r asks of a rank: a training step, or an evaluation or sampling pass. */
static int rank_pass(RankCtx *rc, int64_t step, MplErr *err) {
  MplRun *r = rc->run;
  return !r->eval ? rank_step(rc, step, err) : r->sampling ? rank_sample(rc, err) : rank_eval(rc, err);
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
    if (rank_pass(rc, step, &e) != MPL_OK) record_failure(r, &e);
    pthread_mutex_lock(&r->mu);
    if (--r->running == 0) pthread_cond_broadcast(&r->done);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* After a step of rank threads: each rank's wait from its end to the step's last end
 * (MplRankStats.tail_s). Under MPI there is no step barrier: a rank that ends early starts
 * the next step, and the wait shows in its first receive. */
static void add_tails(MplRun *r) {
  double last = 0;
  for (int i = 0; i < r->nworld; i++)
    if (r->ranks[i].step_end > last) last = r->ranks[i].step_end;
  for (int i = 0; i < r->nworld; i++)
    if (r->ranks[i].step_counted) r->ranks[i].stats.tail_s += last - r->ranks[i].step_end;
}

/* Runs step r->step (or with r->eval, evaluation batch r->eval_batch; with r->sampling, a
 * sampling pass) on every rank and waits for all of them. Under MPI: this process's rank
 * runs on this thread, then the losses go to world rank 0. */
int run_one_step(MplRun *r, MplErr *err) {
  if (r->mpi) {
    RankCtx *rc = &r->ranks[r->me];
    if (rank_pass(rc, r->step, err) != MPL_OK) return MPL_ERR;
    return r->sampling ? MPL_OK : gather_losses(r, err); /* sample.c sends each token on */
  }
  pthread_mutex_lock(&r->mu);
  r->running = r->nworld;
  r->gen++;
  pthread_cond_broadcast(&r->go);
  while (r->running > 0) pthread_cond_wait(&r->done, &r->mu);
  bool failed = r->failed;
  pthread_mutex_unlock(&r->mu);
  if (failed) return mpl_errf(err, "%s", r->first_err.msg);
  if (!r->eval) add_tails(r);
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

/* The device backends, by kind (--devices). */
const MplDeviceOps *mpl_device_find(const char *kind) {
  static const MplDeviceOps *const backends[] = {&mpl_device_cpu_ops, &mpl_device_cuda_ops};
  for (size_t i = 0; i < sizeof backends / sizeof *backends; i++)
    if (!strcmp(kind, backends[i]->name)) return backends[i];
  return NULL;
}

/* --devices: the backend, and how many of its devices there are (when it counts them). */
static int init_device_kind(MplRun *r, MplErr *err) {
  const char *kind = r->opts.device_kind ? r->opts.device_kind : "cpu";
  r->devops = r->opts.device_ops ? r->opts.device_ops : mpl_device_find(kind);
  if (!r->devops) return mpl_errf(err, "device kind '%s' is not available", kind);
  return r->devops->count ? r->devops->count(&r->ndevices, err) : MPL_OK;
}

/* A device with its own communicator (world_init): the communicator over the ranks'
 * devices, once they are initialised; under MPI this process's rank's, over the MPI one. */
static int init_device_comm(MplRun *r, MplErr *err) {
  const MplDeviceOps *o = r->devops;
  MplCommMesh mesh = {.dp = r->dp, .tp = r->tp, .pp = r->pp};
  if (r->mpi) {
    if (o->mpi_init(&r->dcomm, r->mpi, &r->ranks[r->me].dev, &mesh, err) != MPL_OK) return MPL_ERR;
    r->ranks[r->me].comm = r->dcomm;
    return MPL_OK;
  }
  MplDevice **devs = mpl_calloc((size_t)r->nworld, sizeof *devs);
  if (!devs) return mpl_errf(err, "out of memory");
  for (int i = 0; i < r->nworld; i++) devs[i] = &r->ranks[i].dev;
  int st = o->world_init(&r->dworld, r->nworld, devs, &mesh, err);
  mpl_free(devs);
  for (int i = 0; i < r->nworld && st == MPL_OK; i++) r->ranks[i].comm = o->world_rank(r->dworld, i);
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

/* MPL_CUDA_GRAPHS (0, 1; unset or empty: 0): a device with its own memory launches a pass's
 * work as CUDA graphs (device_cuda_graph.c; the CUDA communicators launch what is captured
 * before each message or collective: mpl_cuda_flush), without --trace or --profile (which
 * time each instruction on the host); elsewhere a warning says it has no effect. */
static int init_graphs(MplRun *r, MplErr *err) {
  const char *e = getenv("MPL_CUDA_GRAPHS");
  r->graphs = false;
  if (!e || !*e || !strcmp(e, "0")) return MPL_OK;
  if (strcmp(e, "1")) return mpl_errf(err, "MPL_CUDA_GRAPHS must be 0 or 1, not '%s'", e);
  const char *why = !r->devops->device_memory ? "the cpu device"
                  : r->opts.trace_path       ? "a run with --trace"
                  : r->opts.profile_path     ? "a run with --profile"
                                             : NULL;
  if (why && r->lead) fprintf(stderr, "mplrun: warning: MPL_CUDA_GRAPHS=1 has no effect on %s\n", why);
  r->graphs = !why;
  return MPL_OK;
}

/* The CPU device's switches (MPL_CPU_SDPA, MPL_CPU_BF16), checked once at the start: a value
 * they do not take is an error naming it, not the default in silence; an instruction set
 * MPL_CPU_SDPA names that this CPU lacks, a warning (the best it has is used). */
static int init_cpu_env(MplRun *r, MplErr *err) {
  bool lacks;
  if (mpl_sdpa_isa_env(&lacks, err) != MPL_OK) return MPL_ERR;
  const char *bf = getenv("MPL_CPU_BF16");
  if (bf && *bf && strcmp(bf, "0") && strcmp(bf, "1")) return mpl_errf(err, "MPL_CPU_BF16 must be 0 or 1, not '%s'", bf);
  const char *isa = getenv("MPL_CPU_SDPA");
  if (lacks && r->lead && !r->devops->device_memory)
    fprintf(stderr, "mplrun: warning: MPL_CPU_SDPA=%s: this CPU has no %s; the fused attention uses %s\n", isa, isa,
            mpl_sdpa_isa_name(mpl_sdpa_cpu_isa()));
  return MPL_OK;
}

static int run_init_body(MplRun *r, MplErr *err) {
  const Job *job = r->job;
  if (check_job(job, err) != MPL_OK) return MPL_ERR;
  if (init_device_kind(r, err) != MPL_OK) return MPL_ERR;
  r->pp = job->mesh.pp;
  r->dp = job->mesh.dp;
  r->tp = job->mesh.tp;
  r->nworld = r->dp * r->tp * r->pp;
  r->m = (int)job->train.microbatches;
  r->B = job->train.batch / (job->train.microbatches * r->dp);
  r->total_steps = r->opts.steps >= 0 ? r->opts.steps : job->train.steps;
  r->optim_fresh = true;
  r->last_loss = r->val_loss = NAN;
  if (!r->devops->load_kernels && init_kernels(r, err) != MPL_OK) return MPL_ERR;
  bool own_comm = r->devops->world_init != NULL; /* the device brings its communicator */
  if (init_mpi(r, err) != MPL_OK || init_graphs(r, err) != MPL_OK || init_cpu_env(r, err) != MPL_OK) return MPL_ERR;
  if (r->lead && init_outputs(r, err) != MPL_OK) return MPL_ERR;
  if (!own_comm && !r->mpi && mpl_comm_world_init(&r->world, r->nworld, err) != MPL_OK) return MPL_ERR;
  if (r->world) mpl_comm_world_set_spin(r->world, r->nworld * r->opts.threads);
  r->ranks = mpl_calloc((size_t)r->nworld, sizeof *r->ranks);
  if (!r->ranks) return mpl_errf(err, "out of memory");
  for (int i = 0; i < r->nworld; i++)
    if ((r->mpi && i != r->me ? init_rank_ids(r, i, err) : init_rank(r, i, err)) != MPL_OK) return MPL_ERR;
  if (own_comm && init_device_comm(r, err) != MPL_OK) return MPL_ERR;
  if (init_param_maps(r, err) != MPL_OK || init_whole_params(r, err) != MPL_OK || init_write_buf(r, err) != MPL_OK)
    return MPL_ERR;
  for (int i = 0; i < r->nworld; i++)
    if (r->ranks[i].live && upd_init_rank(r, &r->ranks[i], err) != MPL_OK) return MPL_ERR;
  if (init_data(r, err) != MPL_OK || init_val(r, err) != MPL_OK || init_params(r, err) != MPL_OK) return MPL_ERR;
  if (r->opts.init_path && mpl_ckpt_load_params(r, r->opts.init_path, err) != MPL_OK) return MPL_ERR;
  if (r->opts.resume_dir && mpl_ckpt_resume(r, r->opts.resume_dir, err) != MPL_OK) return MPL_ERR;
  if (init_observability(r, err) != MPL_OK || measure_init(r, err) != MPL_OK) return MPL_ERR;
  return start_threads(r, err);
}

int mpl_run_init(MplRun **out, const Job *job, const MplRunOpts *opts, MplErr *err) {
  *out = NULL;
  MplRun *r = mpl_calloc(1, sizeof *r);
  if (!r) return mpl_errf(err, "out of memory");
  r->job = job;
  r->opts = *opts;
  r->ckpt_lock.fd = -1;
  if (r->opts.threads < 1) r->opts.threads = 1;
  if (!r->opts.out) r->opts.out = stdout;
  if (run_init_body(r, err) != MPL_OK) {
    mpl_run_free(r);
    return MPL_ERR;
  }
  *out = r;
  return MPL_OK;
}

void mpl_run_unlock(MplRun *r) { mpl_ckpt_unlock(&r->ckpt_lock); }

void mpl_run_free(MplRun *r) {
  if (!r) return;
  stop_threads(r);
  mpl_free(r->write_buf);
  if (r->sync_init) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->go);
    pthread_cond_destroy(&r->done);
  }
  if (r->dworld) r->devops->world_free(r->dworld); /* before the devices it uses */
  if (r->dcomm) r->dcomm->ops->free(r->dcomm);
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
  mpl_tokens_free(&r->val_tok);
  if (r->have_synth) mpl_synth_free(&r->synth);
  if (r->tracing) mpl_trace_free(&r->trace);
  if (r->metrics_open) mpl_metrics_close(&r->metrics);
  mpl_ckpt_unlock(&r->ckpt_lock);
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

/* Is validation due after step `step` (0-based)? After every eval_every-th step and the last. */
static bool eval_due(const MplRun *r, int64_t step) {
  int64_t every = r->job->train.eval_every;
  return r->validating && (step + 1 == r->total_steps || (every > 0 && (step + 1) % every == 0));
}

/* The val loss: eval_batches evaluation passes of the whole mesh (rank_eval), batch k
 * reading the val file's rows of step k from its start; the mean of their losses, each
 * the mean over micro-batches and replicas as a step's loss is. */
static int evaluate(MplRun *r, MplErr *err) {
  int64_t K = r->job->train.eval_batches;
  double sum = 0;
  int st = MPL_OK;
  r->eval = true;
  for (r->eval_batch = 0; r->eval_batch < K && st == MPL_OK; r->eval_batch++) {
    st = run_one_step(r, err);
    sum += step_loss(r);
  }
  r->eval = false;
  r->val_loss = sum / (double)K;
  return st;
}

/* A loss for the progress line: 4 decimals, as PyTorch scripts print it; "nan", "inf" and
 * "-inf" (printf's "-nan" names no sign a user can use); past 1e6, 4 significant digits in
 * e-notation, not 30 digits of a diverging float. */
static const char *fmt_loss(char *buf, size_t n, double v) {
  if (isnan(v)) snprintf(buf, n, "nan");
  else if (isinf(v)) snprintf(buf, n, "%s", v < 0 ? "-inf" : "inf");
  else snprintf(buf, n, fabs(v) < 1e6 ? "%.4f" : "%.4e", v);
  return buf;
}

/* Why a step's loss or gradient norm is not finite, for its error: before any update (the
 * first step of a fresh run) the learning rate plays no part; later, it or the run's
 * grad_clip (set or not) does. */
const char *mpl_nonfinite_hint(const MplRun *r, int64_t step) {
  return step == 0                    ? "at the initial params, before any update: an op is outside its domain (log or "
                                        "sqrt of a negative, a division by 0, exp overflowing)"
         : r->job->train.grad_clip > 0 ? "lower the learning rate or grad_clip"
                                       : "lower the learning rate or set grad_clip";
}

void flush_out(MplRun *r, FILE *out) {
  errno = 0;
  if (fflush(out) != 0 && errno == EPIPE && r->opts.out_closed) r->opts.out_closed();
}

static int report_step(MplRun *r, int64_t step, double step_s, double avg_s, bool evaluated, MplErr *err) {
  double lr = mpl_lr_at(&r->job->train, r->total_steps, step);
  double tokens = (double)(r->B * r->m * r->dp); /* the step's rows; tokens when a row is a sequence */
  /* a row is a sequence for token data, and for a model with an input of tokens [B, seq]
     (i32) or of vectors [B, seq, ...]; not for features [B, n] that happen to number seq */
  bool seq = r->tokens;
  for (int i = 0; i < r->job->ninputs && !seq; i++) {
    const JobValue *v = &r->job->values[r->job->inputs[i].value];
    seq = r->job->inputs[i].token_role >= 0 ||
          (v->dims[1] == r->job->train.seq && ((v->rank == 2 && v->dtype == JDT_I32) || v->rank >= 3));
  }
  if (seq) tokens *= (double)r->job->train.seq;
  double tps = step_s > 0 ? tokens / step_s : 0;
  if (!r->opts.quiet && r->lead) {
    char eta[32];
    fmt_eta(eta, sizeof eta, avg_s * (double)(r->total_steps - step - 1));
    char loss[32], val[32];
    fprintf(r->opts.out, "step %lld/%lld | loss %s | lr %.2e | %.0f %s | %.1f ms/step | ETA %s",
            (long long)step + 1, (long long)r->total_steps, fmt_loss(loss, sizeof loss, r->last_loss), lr, tps,
            seq ? "tok/s" : "samples/s", step_s * 1e3, eta);
    if (evaluated) fprintf(r->opts.out, " | val_loss %s", fmt_loss(val, sizeof val, r->val_loss));
    fputc('\n', r->opts.out);
    flush_out(r, r->opts.out);
  }
  if (!r->metrics_open) return MPL_OK;
  const char *keys[] = {"step", "loss", "lr", seq ? "tok_s" : "samples_s", "ms", "val_loss"};
  double vals[] = {(double)(step + 1), r->last_loss, lr, tps, step_s * 1e3, r->val_loss};
  return mpl_metrics_line(&r->metrics, keys, vals, evaluated ? 6 : 5, err);
}

/* Threads of one process on the CPUs, more than it may use: said before the first step
 * (a run of 4096 threads a rank took minutes a step with no word) and in the closing report,
 * whose times then include turns waiting for a CPU (comm_local.c's waits sleep instead of
 * spinning). */
static void oversubscribed_note(const MplRun *r, FILE *out, bool start) {
  long want = (long)r->nworld * r->opts.threads;
  int cpus = mpl_cpus_usable();
  if (!r->lead || r->mpi || r->devops->device_memory || want <= cpus) return;
  fprintf(out, "note: %d rank%s x %d thread%s = %ld threads on %d CPU%s: %s (%s %d %s)\n", r->nworld,
          r->nworld == 1 ? "" : "s", r->opts.threads, r->opts.threads == 1 ? "" : "s", want, cpus, cpus == 1 ? "" : "s",
          start ? "they will take turns, slower than threads that fit"
                : "they took turns, so the times above include waiting for a CPU",
          r->nworld <= cpus ? "--threads" : "a mesh of at most", r->nworld <= cpus ? cpus / r->nworld : cpus,
          r->nworld <= cpus ? "fits" : cpus == 1 ? "rank fits" : "ranks fits");
}

int mpl_run_train(MplRun *r, MplErr *err) {
  double t_begin = now_s();
  int64_t done = 0;
  bool ckpt_written = false;
  int stopped = 0;
  r->first_step = r->step;
  if (!r->opts.quiet && r->step < r->total_steps) oversubscribed_note(r, r->opts.out, true);
  if (r->opts.resume_dir && r->step >= r->total_steps && r->total_steps > 0 && !r->opts.quiet && r->lead)
    fprintf(r->opts.out, "mplrun: the checkpoint is at step %lld of %lld: nothing to train (raise --steps)\n",
            (long long)r->step, (long long)r->total_steps);
  for (; r->step < r->total_steps; r->step++) {
    double t0 = now_s();
    if (run_one_step(r, err) != MPL_OK) return MPL_ERR;
    double dt = now_s() - t0;
    r->last_loss = step_loss(r);
    r->optim_fresh = false;
    if (done++ == 0) mpl_cpu_profile_warm();
    bool evaluated = eval_due(r, r->step);
    if (evaluated && evaluate(r, err) != MPL_OK) return MPL_ERR;
    if (report_step(r, r->step, dt, (now_s() - t_begin) / (double)done, evaluated, err) != MPL_OK) return MPL_ERR;
    if (r->lead && !isfinite(r->last_loss))
      return mpl_errf(err, "step %lld: the loss is %s: training stopped, nothing more is written (%s)",
                      (long long)r->step + 1, fmt_loss((char[32]){0}, 32, r->last_loss), mpl_nonfinite_hint(r, r->step));
    if (r->tokens) mpl_loader_advance(&r->loader);
    ckpt_written = false;
    if (r->opts.ckpt_dir && r->opts.ckpt_every > 0 && (r->step + 1) % r->opts.ckpt_every == 0) {
      if (mpl_ckpt_write_dir(r, r->opts.ckpt_dir, r->step + 1, err) != MPL_OK) return MPL_ERR;
      ckpt_written = true;
    }
    int sig = r->opts.stop ? *r->opts.stop : 0;
    if (r->mpi && r->opts.stop && r->step + 1 < r->total_steps) { /* every process stops after the same step: a
                                                                  signal one process got is every one's */
      int *all = mpl_malloc(sizeof *all * (size_t)r->mpi->size);
      if (!all || mpl_comm_mpi_allgather(r->mpi, &sig, all, sizeof sig) != MPL_OK) {
        mpl_free(all);
        return mpl_errf(err, "step %lld: agreeing on a stop: %s", (long long)r->step + 1, r->mpi->err.msg);
      }
      for (int p = 0; p < r->mpi->size && !sig; p++) sig = all[p];
      mpl_free(all);
    }
    if (sig && r->step + 1 < r->total_steps) { /* a signal: this step was the last */
      stopped = r->stopped = sig;
      r->step++;
      break;
    }
  }
  if (r->opts.ckpt_dir && !ckpt_written && mpl_ckpt_write_dir(r, r->opts.ckpt_dir, r->step, err) != MPL_OK) return MPL_ERR;
  if (r->opts.save_path && mpl_ckpt_save_params(r, r->opts.save_path, err) != MPL_OK) return MPL_ERR;
  if (measure_write(r, err) != MPL_OK) return MPL_ERR;
  if (r->tracing && r->mpi && gather_trace(r, err) != MPL_OK) return MPL_ERR;
  if (r->tracing && r->lead && mpl_trace_write(&r->trace, r->opts.trace_path, err) != MPL_OK) return MPL_ERR;
  if (stopped) {
    const char *ck = r->opts.ckpt_dir, *sv = r->opts.save_path;
    return mpl_errf(err, "stopped by signal %d after step %lld of %lld: %s%s%s%s%s%s%s", stopped, (long long)r->step,
                    (long long)r->total_steps, ck ? "the checkpoint in " : "", ck ? ck : "",
                    ck ? " holds that step (--resume continues from it)" : "", ck && sv ? "; " : "",
                    sv ? "the params were saved to " : "", sv ? sv : "",
                    !ck && !sv ? "nothing was saved (no --checkpoint or --save was given)" : "");
  }
  return MPL_OK;
}

static const MplRankStats *stats_of(const MplRun *r, const MplRankStats *all, int w) {
  return all ? &all[w] : &r->ranks[w].stats;
}

/* "slowest: rank 1, busy 412.0 ms over 5 steps: compute 401.2 ms, update phase 10.8 ms;
 * waiting for messages 3.1 ms, set-up 1.0 ms; the others wait for it (rank 0 waits
 * 160.2 ms for messages)": the rank with the most busy time (the one the pipeline waits
 * for), where its wall time went, and the rank that waits longest for messages. */
static void report_slowest(const MplRun *r, const MplRankStats *all, int slow, FILE *out) {
  const MplRankStats *s = stats_of(r, all, slow);
  int waits = slow;
  for (int w = 0; w < r->nworld; w++)
    if (stats_of(r, all, w)->msg_s > stats_of(r, all, waits)->msg_s) waits = w;
  double other = s->wall_s - s->compute_s - s->msg_s - s->update_s;
  fprintf(out, "slowest: rank %d, busy %.1f ms over %lld step%s: compute %.1f ms, update phase %.1f ms; waiting for "
          "messages %.1f ms, set-up %.1f ms", slow, s->busy_s * 1e3, (long long)s->steps, s->steps == 1 ? "" : "s",
          s->compute_s * 1e3, s->update_s * 1e3, s->msg_s * 1e3, (other > 0 ? other : 0) * 1e3);
  if (waits != slow)
    fprintf(out, "; rank %d waits longest for messages (%.1f ms)", waits, stats_of(r, all, waits)->msg_s * 1e3);
  fputc('\n', out);
}

void mpl_run_report(const MplRun *r, FILE *out) {
  MplRankStats *all = NULL;
  if (r->mpi) {
    all = mpl_calloc((size_t)r->nworld, sizeof *all);
    if (!all) return;
    gather_stats(r, all);
  }
  int slow = 0;
  for (int i = 0; i < r->nworld && r->lead; i++) {
    const MplRankStats *s = all ? &all[i] : &r->ranks[i].stats;
    double span = s->wall_s + s->tail_s; /* up to the step's end, as the plan's makespan */
    double bubble = span > 0 ? 1.0 - s->busy_s / span : 0;
    fprintf(out, "rank %d: busy %.1f ms | bubble %.3f (predicted %.3f) | arena %llu bytes | update state %llu bytes\n", i,
            s->busy_s * 1e3, bubble, r->job->ranks[i % r->pp].predicted_bubble, (unsigned long long)s->arena_bytes,
            (unsigned long long)s->state_bytes);
    if (s->busy_s > (all ? all[slow] : r->ranks[slow].stats).busy_s) slow = i;
  }
  if (r->lead && r->nworld > 1) report_slowest(r, all ? all : NULL, slow, out);
  oversubscribed_note(r, out, false);
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
