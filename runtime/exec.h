/*
 * exec.h — the execution side of mplrun, in sections named after the files that
 * define them:
 *   optim.c       SGD and AdamW (torch.optim's arithmetic), gradient clipping, lr schedules
 *   device_cpu.c  the device backend interface and the `cpu` backend
 *   device_cuda.c the `cuda` backend (cudaMalloc arena, streams, PTX kernels, cuBLAS)
 *   exec.c        the run: one executor thread per rank (or one rank per process under MPI),
 *                 the training loop, sampling
 *   checkpoint.c  --init/--save safetensors by global name, --checkpoint/--resume directories
 *
 * The communicators, the CUDA ones included, are comm.h's (included through mpl.h).
 *
 * Conventions are mpl.h's: MPL_OK / MPL_ERR with a message in an MplErr, nothing exits,
 * host memory through mpl_malloc, no global mutable state (an MplRun holds everything).
 */
#ifndef MPL_EXEC_H
#define MPL_EXEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "job.h"
#include "mpl.h"

/* ==== optim.c ========================================================= */

/* The learning rate of step t (0-based) of a run of `steps` steps (the train config's
 * lr_schedule; a run cut short with --steps follows a shorter cosine). */
double mpl_lr_at(const TrainConfig *c, int64_t steps, int64_t t);

/* torch.optim.SGD, dampening 0, no nesterov: buf = momentum*buf + g (buf = g on the first
 * step); p -= lr*buf. momentum == 0: p -= lr*g and buf is unused (may be NULL). */
void mpl_sgd_update(float *p, const float *g, float *buf, int64_t n, double lr,
                    double momentum, bool first_step);
/* torch.optim.AdamW (single-tensor path) for step t (1-based). decay: apply weight decay. */
void mpl_adamw_update(float *p, const float *g, float *m, float *v, int64_t n, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int64_t t);
/* AdamW's scalars for step t as float32, rounded once from double as torch does; the
 * per-element update (mpl_adamw_update, and the device kernels that match it) is
 *   p' = (do_decay ? p*decay : p)
 *   m' = small ? m + w1*(g - m) : g - (g - m)*(1 - w1)          (lerp)
 *   v' = v*b2 + (w2*g)*g
 *   p' = p' + (neg_step*m') / (sqrt(v')/bc2_sqrt + eps)
 * every operation rounded to float (no FMA). */
typedef struct MplAdamWScalars {
  float decay, w1, b2, w2, neg_step, bc2_sqrt, eps;
  bool do_decay, small;
} MplAdamWScalars;
void mpl_adamw_scalars(MplAdamWScalars *a, double lr, double beta1, double beta2, double eps, double weight_decay,
                       int64_t t);
/* Sum of squares of g accumulated in float64, in element order. */
double mpl_sumsq_f64(const float *g, int64_t n);
/* torch.nn.utils.clip_grad_norm_'s coefficient, clamped to 1. */
double mpl_clip_coef(double total_norm, double max_norm);
void mpl_scale_f32(float *g, int64_t n, float coef);

#include "device.h" /* the device backends */

/* The tensor list of the CUDA multi-tensor kernels (runtime/cuda/optim.cu's MplList, which
 * documents the words): tensor i's pointers (p, or g where p is NULL; v, or out where out is
 * set), n, and its range of the launch's blocks, ceil(n / per_block) of them, at least 1 and
 * at most cap; the AdamW word (6) is 0 for the caller to set. Returns the launch's blocks. */
enum { MPL_OPT_ROW = 8 };
typedef struct MplOptList {
  long long w[MPL_OPT_LIST * MPL_OPT_ROW + 1];
} MplOptList;
int64_t mpl_opt_list_fill(MplOptList *L, const MplOptTensor *t, int k, int64_t per_block, int64_t cap);
/* The AdamW word of a list row: the decay's float bits, do_decay above them. */
long long mpl_opt_list_adamw_word(const MplAdamWScalars *s);

/* ==== exec.c ========================================================== */

typedef struct MplRunOpts {
  const char *device_kind;     /* "cpu" or "cuda" */
  const int *device_ids;       /* cuda: the device of each rank ([ndevice_ids] = pp); NULL: rank i
                                  on device i mod the device count */
  int ndevice_ids;
  bool tf32;                   /* cuda: the f32 products may use TF32 too (the job's precision decides
                                  the others: JobStep.prec); off by default */
  int threads;                 /* per rank, >= 1 */
  int64_t steps;               /* total steps (a resumed run continues up to it); < 0: the job's */
  const char *data_path;       /* overrides the job's token file; NULL: the job's */
  const char *val_path;        /* --val: overrides the job's validation file; NULL: the job's */
  const char *init_path;       /* --init */
  const char *save_path;       /* --save */
  const char *ckpt_dir;        /* --checkpoint */
  int64_t ckpt_every;          /* <= 0: only at the end */
  const char *resume_dir;      /* --resume */
  const char *trace_path;      /* --trace */
  const char *metrics_path;    /* --metrics */
  const char *profile_path;    /* --profile: each op's measured time, written after training */
  bool quiet;                  /* no progress lines */
  FILE *out;                   /* progress and reports (NULL: stdout) */
  uint64_t job_checksum;       /* identity of the job file, stored in checkpoints */
  const atomic_int *stop;      /* set (non-zero) by mplrun's stop signals (SIGINT, SIGTERM, ...): training ends after the
                                  step in progress, writes the checkpoint and --save, and fails with
                                  "stopped by signal N after step S"; NULL: never */
  void (*out_closed)(void);    /* called when a write of progress lines or sampled text finds its reader
                                  gone (EPIPE: mplrun blocks SIGPIPE on every thread but its signal
                                  thread): mplrun stops as SIGPIPE stops it; NULL: nothing */
  MplComm *comm;               /* under mpirun: this process's rank of the world (comm_mpi.c); the
                                  process runs that one rank and the main-thread work (loss,
                                  --save, checkpoints, report, trace) goes through messages,
                                  with world rank 0 writing the files and the progress lines.
                                  NULL: every rank is a thread of this process */
  /* Test hooks: kernels to use instead of the JIT's (n == job's kernel count); and a
   * failure injected at instruction fail_ins of step fail_step on rank fail_rank. */
  const MplKernelFn *kernels;
  int nkernels;
  const MplDeviceOps *device_ops; /* test hook: this backend instead of device_kind's */
  int fail_rank;               /* -1: none */
  int64_t fail_step;
  int fail_ins;
} MplRunOpts;

void mpl_run_opts_default(MplRunOpts *o);

/* Per-rank totals, filled during the run. */
typedef struct MplRankStats {
  double busy_s, wall_s;       /* inside FWD/BWD/optimizer; the rank's step time */
  /* where the wall time went: the passes (fwd, bwd_b, bwd_w, their tp collectives
   * included), the pipeline's sends and receives (waiting for a message), the update
   * phase (its collectives included); the rest is the step's set-up */
  double compute_s, msg_s, update_s;
  /* ranks that are threads: the time from the rank's end of a step to the step's end (its
   * last rank's), which the rank spends waiting at the step barrier: part of its bubble,
   * as the plan counts it (its idle time up to the pipeline's makespan) */
  double tail_s;
  int64_t steps;               /* the steps counted (the first is left out when more follow) */
  uint64_t arena_bytes;
  uint64_t state_bytes; /* the update phase's device memory: optimizer state, gradient sums, receive buffer, norms */
  int64_t update_elems; /* param elements the update phase updates per step (its ranges) */
} MplRankStats;

typedef struct MplRun MplRun;

/* Allocates arenas, loads kernels, opens the data, initialises params (from the seed,
 * --init or --resume). */
int mpl_run_init(MplRun **out, const Job *job, const MplRunOpts *opts, MplErr *err);
void mpl_run_free(MplRun *r);
/* Trains from the current step up to the total steps; progress, trace, metrics,
 * checkpoints and --save as the options say; with validation data (the job's val or
 * --val), the val loss after every eval_every-th step and after the last. */
int mpl_run_train(MplRun *r, MplErr *err);
/* How mpl_run_sample picks each token. */
typedef struct MplSampleOpts {
  double temperature;          /* 0: greedy; default 1 */
  int64_t top_k;               /* 0: every token */
  bool has_seed;               /* seed given (--seed), else the job's train seed */
  uint64_t seed;
} MplSampleOpts;
/* Can this job sample from this prompt with these options (a token model; the prompt's
 * bytes inside the vocabulary: the logits' classes and the idx input's bound, the rows
 * of the table it indexes)? mplrun asks before it trains; mpl_run_sample asks again. */
int mpl_sample_check(const MplRun *r, const char *prompt, const MplSampleOpts *o, MplErr *err);
/* Generates n tokens after the prompt (its bytes are the tokens) with the forward
 * programs, dropout off; writes the prompt, the tokens as bytes and a newline to out. A
 * drawn token the idx input cannot take (past the table's rows) is an error. */
int mpl_run_sample(MplRun *r, const char *prompt, int64_t n, const MplSampleOpts *o, FILE *out, MplErr *err);
/* Prints per rank busy ms, bubble fraction and arena bytes. */
void mpl_run_report(const MplRun *r, FILE *out);
/* The messages and collectives of the last step, counted where the executor issues them:
 * out[w * MPL_COMM__COUNT + k] for world rank w and kind k (job.h's MPL_COMM_KINDS; mplc's
 * --emit=plan predicts the same). Under MPI collective: every process calls it, and world
 * rank 0 gets every rank's counts (another process only its own). */
int mpl_run_comm_counts(const MplRun *r, MplCommCount *out, MplErr *err);
/* Introspection, for tests and checkpoints. */
int64_t mpl_run_step(const MplRun *r);
/* The steps this run trained (not counting those of a checkpoint it resumed). */
int64_t mpl_run_steps_trained(const MplRun *r);
/* The signal that stopped training after a step, or sampling after a token (every process's
 * under MPI), else 0. */
int mpl_run_stopped(const MplRun *r);
/* Removes the --checkpoint lock now (before an MPI_Abort, which skips mpl_run_free). */
void mpl_run_unlock(MplRun *r);
double mpl_run_last_loss(const MplRun *r);
/* The last evaluation's val loss (NaN before the first; under MPI world rank 0's). */
double mpl_run_val_loss(const MplRun *r);
const MplRankStats *mpl_run_rank_stats(const MplRun *r, int rank);
/* Copies param p (index into job->params) from the rank that owns it into out (numel floats). */
int mpl_run_get_param(const MplRun *r, int p, float *out, MplErr *err);
/* Writes param p on every rank that holds it. */
int mpl_run_set_param(MplRun *r, int p, const float *in, MplErr *err);
int mpl_run_get_grad(const MplRun *r, int p, float *out, MplErr *err);
/* Param p whole (tp parts joined): its dims and numel as checkpoints store it. */
const JobParam *mpl_run_param(const MplRun *r, int p);
/* Copies between a whole value and tp rank tpi's part of it (split on axis in groups). */
void mpl_shard_copy(void *whole, void *part, const int64_t *dims, int rank, int axis, int groups, int tp, int tpi,
                    size_t elem, bool to_part);
/* Optimizer state of param p: the slot names of its kind ("exp_avg", "exp_avg_sq" /
 * "momentum"), nslots of them; get/set copy numel floats (every holding rank on set). */
int mpl_run_optim_slots(const MplRun *r, const char *const **names);
int mpl_run_get_optim(const MplRun *r, int p, int slot, float *out, MplErr *err);
int mpl_run_set_optim(MplRun *r, int p, int slot, const float *in, MplErr *err);
/* Are a param's (whole) values finite, and so their rounding to its type? A param of type
 * f16 or bf16 is kept in f32 and rounded where it is read: a value that rounds to an
 * infinity there (f16: from 65520 on; bf16: past 3.3961e38) fails, naming the param and
 * element. An init's draw is refused so; a file's values are warned of (training may have
 * grown them so, and PyTorch would load them). */
int mpl_param_check_values(const JobParam *jp, const float *in, MplErr *err);
/* Data position (the token loader's, or 0 for synthetic data), a divisor of it (the loader's
 * alignment: batch * seq, less after a resume from another batch), and their restore
 * (data_align 0: unknown, this run's batch * seq). */
int64_t mpl_run_data_pos(const MplRun *r);
int64_t mpl_run_data_align(const MplRun *r);
/* The run's length: --steps, else the train block's (the cosine schedule's span). */
int64_t mpl_run_total_steps(const MplRun *r);
int mpl_run_restore(MplRun *r, int64_t step, int64_t data_pos, int64_t data_align, MplErr *err);
/* The optimizer's next step is its first (sgd: each momentum buffer starts as that step's
 * gradient), as after a resume from a checkpoint of sgd without momentum. */
void mpl_run_optim_restart(MplRun *r);
/* The buffer of the largest param taken before training for --save and --checkpoint (NULL
 * without them): the files are written through it, one tensor at a time. */
float *mpl_run_write_buf(const MplRun *r);
const Job *mpl_run_job(const MplRun *r);
const MplRunOpts *mpl_run_opts(const MplRun *r);
/* Does this process write the files and the progress lines (always, but under MPI
 * world rank 0 only)? Under MPI, get_param, get_optim, report and the checkpoint writers
 * are collective: every process calls them in the same order; set_param and set_optim
 * write this process's rank only (each process reads --init/--resume files itself). */
bool mpl_run_is_lead(const MplRun *r);
/* The whole run: init, train, report, free. */
int mpl_exec_run(const Job *job, const MplRunOpts *opts, MplErr *err);

/* Why a step's loss or gradient norm is not finite, for its error (train.c): at step 0, before
 * any update, an op outside its domain; later, the learning rate, or grad_clip (set or not). */
const char *mpl_nonfinite_hint(const MplRun *r, int64_t step);

/* ==== checkpoint.c ==================================================== */

/* A hash of what a checkpoint must agree on: param names and shapes, optimizer kind. */
uint64_t mpl_ckpt_identity(const Job *job);
/* --save: every param, unsharded f32, by global name. */
int mpl_ckpt_save_params(const MplRun *r, const char *path, MplErr *err);
/* --init: every param must be in the file with its shape. */
int mpl_ckpt_load_params(MplRun *r, const char *path, MplErr *err);
/* DIR/model.safetensors, DIR/optim.safetensors, DIR/state.json (next_step: the step a
 * resume runs first), written into DIR.tmp, which is then swapped with DIR. */
int mpl_ckpt_write_dir(const MplRun *r, const char *dir, int64_t next_step, MplErr *err);
/* Loads params, optimizer state, step and data position from DIR. */
int mpl_ckpt_resume(MplRun *r, const char *dir, MplErr *err);
/* Before a run trains, so that a bad path does not cost the run: DIR (--checkpoint) may
 * be written (a new folder, or one holding a checkpoint alone, in a folder that exists;
 * DIR.tmp, which each write clears, is not `resume`, --resume's folder, or NULL);
 * path (--save, --trace, --profile; flag names it) is no folder and its folder exists and
 * is writable. */
int mpl_ckpt_dir_check(const char *dir, const char *resume, MplErr *err);
/* --checkpoint DIR: this run alone writes DIR (an flock on DIR.lock, beside it, held until
 * mpl_ckpt_unlock, which removes the file); another run holding it is an error naming its
 * pid, and so is one writing --checkpoint DIR.tmp (or X, when DIR is X.tmp). */
typedef struct MplCkptLock {
  int fd; /* -1: none held */
  bool owned; /* the file was opened for writing: this run may remove it */
  char path[4208];
} MplCkptLock;
int mpl_ckpt_lock(const char *dir, MplCkptLock *lk, MplErr *err);
void mpl_ckpt_unlock(MplCkptLock *lk);
/* Before training (mplrun): no output (--save, --metrics, --trace, --profile, --comm-stats)
 * is an input (the job, its data and val files, --init, --resume's files), another output,
 * or inside a checkpoint folder (--checkpoint, --resume); --save may be --init's file (read
 * whole at the start, replaced at the end). An error names both. */
int mpl_paths_check(const MplRunOpts *o, const Job *job, const char *job_path, const char *comm_stats, MplErr *err);
int mpl_out_file_check(const char *path, const char *flag, MplErr *err);

#endif
