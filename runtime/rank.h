/*
 * rank.h — the executor's private header: the run (MplRun) and each rank's context
 * (RankCtx), shared by the files of mplrun's execution side, in sections named after
 * the files that define them:
 *   exec.c    the instruction stream of a step: passes, messages, tp collectives
 *   update.c  the update phase: the instructions mplc's update.c emits
 * Nothing outside runtime/ includes it; the public API is exec.h's.
 */
#ifndef MPL_RANK_H
#define MPL_RANK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "exec.h"

#include <pthread.h>
#include <time.h>

/* Message tags: kind in the top bits, then operands (FIFO order is also checked). */
#define TAG_XFER(x, mb, vi) ((1ull << 60) | ((uint64_t)(x) << 36) | ((uint64_t)(mb) << 16) | (uint64_t)(vi))
#define TAG_TIED(p, u) ((2ull << 60) | ((uint64_t)(p) << 24) | (uint64_t)(u))
/* Under MPI, the main thread's messages to world rank 0 (losses, parts of params, stats, trace;
   and each sampled token, from its picker to every process) */
#define TAG_MAIN(kind, x) ((5ull << 60) | ((uint64_t)(kind) << 48) | (uint64_t)(x))
enum { MAIN_LOSS = 1, MAIN_PART, MAIN_STATS, MAIN_TRACE_N, MAIN_TRACE_EV, MAIN_COMM, MAIN_PROF, MAIN_SAMPLE };

typedef struct RankCtx {
  MplRun *run;
  int rank;              /* pipeline rank: the index of its JobRank */
  int wrank, dpi, tpi;   /* world rank, replica, tp index */
  MplDevice dev;
  void *arena;
  void **ptr;            /* [nvalues * m]: resolved buffers, NULL where not held */
  MplComm *comm;
  pthread_t tid;
  bool started;
  bool live;             /* run by this process (always; under MPI only the process's own rank):
                            the others are shadows with ids, holds[] and loss slots only */
  /* params: per param index */
  bool *holds;           /* [nparams] */
  /* the update phase (update.c): all in device memory, carved from state_mem */
  float **grad;          /* [nparams] the gradient: its one use's accumulator, or a GRAD_SUM's scratch */
  float **opt[2];        /* [nparams] optimizer state slots of the UPDATE range, or NULL */
  float *tmp;            /* receive buffer of GRAD_SUM's remote uses */
  void *state_mem;       /* the one device allocation holding scratch, opt, tmp, norm_dev */
  double *norm_dev;      /* [nparams] NORM_ADD's sums of squares, in device memory */
  bool *norm_added;      /* [nparams] which of them this step's NORM_ADDs wrote (host) */
  double clip_coef;      /* NORM_ALLREDUCE's clipping coefficient, for CLIP */
  double *norm_buf;      /* [nparams] the sums of squares, on the host, all-reduced over the world */
  int *world_ranks;      /* [nworld] 0 .. nworld-1: the norm's group */
  int *group_ranks;      /* [nworld] scratch: a tp or dp collective's group (exec.c, update.c) */
  uint8_t *stage_buf;    /* host staging for inputs */
  void **argv;           /* kernel argument scratch */
  int argv_cap;
  void *rs_buf;          /* reduce-scatter scratch in the arena's memory (rs_bytes), or NULL */
  /* per step */
  double *mb_loss;       /* [m] */
  bool *mb_loss_set;
  MplCommCount comm_counts[MPL_COMM__COUNT]; /* this step's messages and collectives (--comm-stats) */
  MplRankStats stats;
  /* --profile (measure.c): over the counted steps, seconds of each op of Job.opids in the
   * forward, input-gradient and weight-gradient programs ([nopids * 3]), and the GEMMs'
   * FLOPs and seconds; prof_on while a counted step runs */
  double *prof;
  double gemm_flops, gemm_s;
  bool prof_on;
  /* the last step's end on this rank, and whether the step was counted in stats */
  double step_end;
  bool step_counted;
  struct Shadow *shadow;  /* MPL_SHADOW_CHECK=1 (exec.c): owner of each arena granule */
} RankCtx;

void mpl_shadow_free(RankCtx *rc); /* exec.c: MPL_SHADOW_CHECK's state, if any */

struct MplRun {
  const Job *job;
  MplRunOpts opts;
  int pp, m;
  int dp, tp, nworld;        /* nworld = dp * tp * pp */
  int64_t B;                 /* rows per micro-batch */
  const MplDeviceOps *devops;
  RankCtx *ranks;
  MplCommWorld *world;       /* cpu: the in-process communicator */
  MplComm *mpi;              /* under mpirun: this process's communicator (opts.comm) */
  int me;                    /* under mpirun: the world rank this process runs */
  bool lead;                 /* writes files and progress: always, or world rank 0 under MPI */
  bool graphs;               /* MPL_CUDA_GRAPHS=1 on a run that may use it (init_graphs): MplDevice.graphs */
  void *dworld;              /* a device's own communicator world (devops->world_init: cuda's) */
  MplComm *dcomm;            /* ... under mpirun: this rank's, over mpi (devops->mpi_init) */
  int ndevices;              /* devops->count: the visible devices (GPUs) */
  const MplKernelFn *kfn;
  MplCpuKernels cpu_kernels;
  int *owner;                /* [nparams] lowest holding rank */
  bool *updated;             /* [nparams] the owner's stream has an UPDATE of it (else no optimizer state: zeros) */
  bool *chunked;             /* [nparams] that UPDATE keeps the replica's chunk (ZeRO-1): so do state and gradient */
  JobParam *wparams;         /* [nparams] the params whole (tp parts joined): dims and numel */
  bool *tied;                /* [nparams] held by several ranks */
  /* data */
  int *role;                 /* [ninputs] token role: 0 idx, 1 targets, -1 none */
  bool tokens;
  int64_t data_pos_kept; /* the data position of a run that opened no data (mpl_run_restore's) */
  int64_t data_align_kept; /* ... and its alignment (0: none known) */
  int stopped;             /* the signal that ended training after a step, or sampling after a token (agreed
                              under MPI), else 0 */
  MplTokens tok;
  MplLoader loader;
  MplSynth synth;
  bool have_synth;
  /* validation (the job's val or --val): its own token file and loader, read from position
     0 at every evaluation; the training loader is never touched */
  bool validating;
  MplTokens val_tok;
  MplLoader val_loader;
  int64_t eval_batch;        /* the batch an evaluation pass runs (rank_eval) */
  double val_loss;           /* the last evaluation's (NaN before) */
  /* progress */
  int64_t step, total_steps;
  int64_t first_step;        /* the step this run started at (the warm-up step) */
  double last_loss;
  bool optim_fresh;          /* no optimizer step taken yet (SGD's first momentum step) */
  bool eval;                 /* an evaluation pass (sampling, validation): kernels get MPL_MB_EVAL, dropout
                                is off; the rank threads run rank_eval (rank_sample) instead of rank_step */
  /* sampling (sample.c): one token's pass of every rank (rank_sample), while `sampling` */
  bool sampling;
  const int32_t *sample_win; /* the window of tokens micro-batch 0's idx row 0 gets (zero padded) */
  int64_t sample_wlen;
  int sample_idx;            /* the job input that is idx */
  int sample_stage;          /* the fused cross-entropy's stage (its forward stops before step sample_until), or -1 */
  int sample_until;
  /* step synchronisation */
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  bool sync_init;
  uint64_t gen;
  int running;
  bool quit;
  bool failed;
  MplErr first_err;
  /* observability */
  bool profiling;            /* --profile */
  bool tracing;
  MplTrace trace;
  bool metrics_open;
  MplCkptLock ckpt_lock;  /* --checkpoint: held from init_outputs to mpl_run_free (the lead) */
  float *write_buf;      /* --save / --checkpoint: one buffer of the largest param, taken before
                            training, that the files are written through (checkpoint.c) */
  MplMetrics metrics;
};

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline size_t dtype_bytes(int dt) {
  switch (dt) {
  case JDT_F32: case JDT_I32: return 4;
  case JDT_BF16: case JDT_F16: return 2;
  default: return 1;
  }
}

static inline size_t value_bytes(const Job *job, int v) {
  return (size_t)job->values[v].numel * dtype_bytes(job->values[v].dtype);
}

static inline void *vptr(const RankCtx *rc, int v, int mb) {
  return rc->ptr[(size_t)v * rc->run->m + mb];
}

/* The world rank of pipeline rank pr in replica dpi, tp index tpi. */
static inline int world_of(const MplRun *r, int dpi, int tpi, int pr) { return mpl_mesh_rank(r->job->mesh, dpi, tpi, pr); }

/* The same replica and tp index, another pipeline rank. */
static inline int peer_of(const RankCtx *rc, int pr) { return world_of(rc->run, rc->dpi, rc->tpi, pr); }

/* One message or collective of this step, where it is issued (kinds: job.h's MPL_COMM_KINDS;
 * mplc's plan predicts the same counts). kind < 0: a step that moves nothing between ranks. */
static inline void comm_count(RankCtx *rc, int kind, size_t bytes) {
  if (kind < 0) return;
  rc->comm_counts[kind].calls++;
  rc->comm_counts[kind].bytes += bytes;
}

/* The trace clock now (0 when not tracing), and a slice on this rank's trace row for one
 * message or collective from t0 to now, named by its kind (job.h's MPL_COMM_KINDS). */
static inline double trace_t(const RankCtx *rc) { return rc->run->tracing ? mpl_trace_now(&rc->run->trace) : 0; }


void trace_comm(RankCtx *rc, const char *name, double t0);

/* ==== exec.c ========================================================== */

/* One step of one rank: its whole instruction stream (step: 0-based). */
int rank_step(RankCtx *rc, int64_t step, MplErr *err);
/* One evaluation pass of one rank: batch r->eval_batch of the val data through the
 * forward part of its stream; the losses land in mb_loss as a step's do. */
int rank_eval(RankCtx *rc, MplErr *err);
/* One sampling pass of one rank: r->sample_win through micro-batch 0's forward part of its
 * stream (replica 0 only; the fused cross-entropy's stage up to its step r->sample_until). */
int rank_sample(RankCtx *rc, MplErr *err);
/* Program `which` (JP_*) of a stage for micro-batch mb. */
int run_prog(RankCtx *rc, int stage, int which, int mb, int64_t step, MplErr *err);
/* A JS_CE step's sizes and flags as the device's MplCe (no pointers): run_ce's, and the
 * scratch init_rank reserves. */
MplCe mpl_ce_of_step(const JobStep *s);
/* Its steps before step `end` only (sampling reads the fused cross-entropy's operands there,
 * before the program's later steps may reuse their buffers). */
int run_prog_until(RankCtx *rc, int stage, int which, int mb, int64_t step, int end, MplErr *err);

/* A rank's error: "rank N: ..." with its mesh coordinates when the world is a mesh. */
int rank_fail(RankCtx *rc, MplErr *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Value v of micro-batch mb on this rank, or NULL with an error naming the stage. */
void *need_ptr(RankCtx *rc, int v, int mb, int stage, MplErr *err);

/* ==== train.c ========================================================= */

/* Step r->step, or the evaluation or sampling pass r->eval and r->sampling say, on every
 * rank of this process; returns when all of them have ended. */
int run_one_step(MplRun *r, MplErr *err);
/* Flushes out (progress lines, sampled text); a reader gone (EPIPE) is told to r->opts.out_closed. */
void flush_out(MplRun *r, FILE *out);

/* ==== setup.c ========================================================= */

int check_job(const Job *job, MplErr *err);
int init_kernels(MplRun *r, MplErr *err);
/* Rank i of this process (device, arena, buffers) or, under MPI, a shadow of another's. */
int init_rank(MplRun *r, int i, MplErr *err);
int init_rank_ids(MplRun *r, int i, MplErr *err);
/* Owners, holders and ZeRO-1 chunking of the params; their whole shapes; their values. */
int init_param_maps(MplRun *r, MplErr *err);
int init_whole_params(MplRun *r, MplErr *err);
int init_params(MplRun *r, MplErr *err);
int init_data(MplRun *r, MplErr *err);
/* The val token file (the job's val or --val), after init_data. */
int init_val(MplRun *r, MplErr *err);
int init_observability(MplRun *r, MplErr *err);
int init_write_buf(MplRun *r, MplErr *err);
/* The files and the folder the run writes when it ends (--checkpoint, --save, --trace,
 * --profile) checked before it trains. */
int init_outputs(MplRun *r, MplErr *err);
void free_rank(RankCtx *rc);

/* ==== measure.c (--profile) ============================================= */

/* Each live rank's sums, when --profile is given. */
int measure_init(MplRun *r, MplErr *err);
/* Step s of program `which` (JP_*), started at t0, just ran: its time to its source ops. */
int measure_step(RankCtx *rc, const JobStep *s, int which, double t0, MplErr *err);
/* After training: the profile, gathered to world rank 0 and written there. */
int measure_write(MplRun *r, MplErr *err);

/* ==== gather.c (under mpirun) ========================================== */

/* The loss slots of the ranks step_loss reads, into world rank 0's shadows. */
int gather_losses(MplRun *r, MplErr *err);
/* Every rank's trace events to world rank 0 (a count, then the events). */
int gather_trace(MplRun *r, MplErr *err);
/* Every rank's stats into all[] on world rank 0. */
void gather_stats(const MplRun *r, MplRankStats *all);

/* ==== update.c ======================================================== */

/* One update-phase instruction (job.h's JI_TIED_SEND ... JI_DP_ALLGATHER). */
int upd_run(RankCtx *rc, const JobIns *ins, int64_t step, MplErr *err);
/* How many of the instructions in[0 .. avail) from in[0] on run as one multi-tensor op
 * (upd_run_list): 1 when the device has no list op for in[0]'s kind. */
int upd_list_len(const RankCtx *rc, const JobIns *in, int avail);
/* Runs in[0 .. k), k from upd_list_len (> 1), as one multi-tensor op of the device. */
int upd_run_list(RankCtx *rc, const JobIns *in, int k, int64_t step, MplErr *err);
/* Per rank set-up: the gradient of each param (the accumulator itself, or a scratch sum),
 * the optimizer state of the ranges its UPDATE instructions name, and the buffers of the
 * exchanges; r->chunked from the UPDATE flags. */
int upd_init_rank(MplRun *r, RankCtx *rc, MplErr *err);
void upd_free_rank(RankCtx *rc);

#endif
