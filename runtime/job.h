/*
 * job.h — the job: everything mplrun needs, decided by mplc, as plain data.
 *
 * mplc fills a Job and writes it with job_write (runtime/job.c, on top of the
 * checksummed container of jobfile.c); mplrun reads it back with job_read, which
 * validates every count, index and offset so that the executor can trust it.
 *
 * Invariants (checked by job_validate):
 *  - every value id used anywhere is < nvalues; every kernel index < nkernels;
 *  - every (value, micro-batch slot) a rank touches has an offset in that rank's
 *    arena with offset + bytes <= arena_bytes;
 *  - every instruction's stage is one of the rank's stages; micro-batches < m.
 */
#ifndef MPL_JOB_H
#define MPL_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The version mplc and mplrun print (--version): the two are built and released together. */
#define MPL_VERSION "0.1"

/* The format of the job's contents, written in the container's header flags (job_write) and
 * checked by job_read. 2: the update phase as instructions (JI_TIED_SEND ... JI_DP_ALLGATHER);
 * 3: validation (TrainConfig's val_path, eval_every, eval_batches); 4: precision (TrainConfig's precision,
 * JobStep's prec); 5: profiles (the ops' identities, each step's source ops, the ranks' device
 * speeds) and the zbv schedule; 6: the fused attention's steps (JS_SDPA,
 * JS_SDPA_BWD);
 * 7: the fused cross-entropy's steps (JS_CE, JS_CE_BWD) and JobStep's chunk;
 * 8: JS_CE writes the gradient for dloss = 1 (dx1, dw1) over blocks of rows (chunk: rows);
 * no JS_CE_BWD (the backward scales by dloss in kernels);
 * 9: the embedding's gradient as a step of its own (JS_EMB_GRAD);
 * 10: JobParam's type (a half param's declared type: its values are checked against it);
 * Job's loss_ces;
 * 11: JobInput.draw_hi;
 * 12: three programs per stage (the recompute program, always empty since @recompute
 * copies joined the backward programs, is gone);
 * 13: JobValue without its param and use (never read: a param's values are JobParam's). */
#define MPL_JOB_FORMAT 13

/* ---- values: one per graph op (the op id is the value id) ---------------- */
typedef enum JobDType { JDT_F32, JDT_BF16, JDT_F16, JDT_I32, JDT_BOOL } JobDType;

typedef struct JobValue {
  uint8_t dtype;     /* JobDType */
  uint8_t kind;      /* JV_ACT, JV_PARAM, JV_INPUT, JV_GRAD (a PARAM_GRAD accumulator), JV_CHECK */
  int32_t rank;      /* number of dims */
  int64_t dims[8];
  int64_t numel;
} JobValue;
enum { JV_ACT, JV_PARAM, JV_INPUT, JV_GRAD, JV_CHECK };

/* A run-time check (the kernels cannot fail: a gather index out of range is clamped, an
 * i32 x % 0 is 0): value is an i32 [] JV_CHECK value, the count of bad elements, written by
 * one kernel step of a program; the executor reads it after that step and stops the run
 * with `what` ("model.mpl:12:7: gather: index out of range [0, 10)") when it is not 0. */
typedef struct JobCheck {
  int32_t value;
  char *what;
} JobCheck;

/* ---- params and inputs ---------------------------------------------------- */
typedef struct JobParam {
  char *name;        /* global name, e.g. "h.0.attn.c_attn.weight" */
  int32_t value;     /* value id of the PARAM op */
  int32_t rank;
  int64_t dims[8];
  int64_t numel;
  uint8_t init;      /* 0 zeros, 1 ones, 2 normal(a), 3 uniform(a, b) */
  double init_a, init_b;
  bool decay;        /* AdamW weight decay applies (2+ dims) */
  uint8_t type;      /* its declared JobDType (f32, bf16, f16): kept in f32 and rounded to a
                        half type where it is read */
  int32_t split_dim; /* tp: dims[] are this rank's part, split_dim holds 1/tp of it; -1: whole */
  int32_t groups;    /* tp: the split dimension is g equal groups, each split separately */
  int32_t nuses;     /* PARAM_GRAD accumulators, summed in use order */
  int32_t *use_value;/* [nuses] value id of each use's accumulator (JV_GRAD) */
  int32_t *use_stage;/* [nuses] stage holding that accumulator */
} JobParam;

typedef struct JobInput {
  char *name;        /* model input name: "idx", "targets", "x", ... */
  int32_t value;
  uint8_t dtype;
  int32_t rank;
  int64_t dims[8];   /* per micro-batch: [B, ...] */
  int64_t hi;        /* an op's bound on an i32 input's values: [0, hi) (0: none); token data
                        is checked against it */
  int64_t draw_hi;   /* synthetic data draws in [0, draw_hi): hi, or where the ops read only
                        slices of the input, theirs (in [0, 2) for 0) */
  int32_t token_role;/* tokens(): 0 idx (first input), 1 targets (second), -1 none */
} JobInput;

/* ---- steps of a stage program (fuse.c's output, serialised) ----------------- */
typedef enum JobStepKind {
  JS_KERNEL, JS_GEMM, JS_ALIAS, JS_ACCUM, JS_COMM, JS_SDPA, JS_SDPA_BWD, JS_CE, JS_EMB_GRAD, JS__COUNT
} JobStepKind;

typedef struct JobStep {
  uint8_t kind;
  int32_t kernel;       /* JS_KERNEL */
  int32_t nargs;
  int32_t *args;        /* JS_KERNEL: value ids in argument order; JS_GEMM: a, b, c;
                           JS_ALIAS: out, in; JS_ACCUM: acc, src; JS_COMM: op value */
  int64_t n_outer;      /* JS_KERNEL: outer iterations */
  /* JS_GEMM */
  bool ta, tb;
  int64_t M, N, K, batch, stride_a, stride_b, stride_c;
  int64_t off_a, off_b, off_c; /* element offset of batch 0 in each operand */
  double alpha, beta;
  uint8_t prec;         /* JS_GEMM: PREC_F32: f32 products; PREC_TF32: a GPU may use TF32 tensor cores;
                           PREC_BF16: A and B hold bf16 values exactly (rounded by the job's kernels), so a
                           device may multiply them in bf16 units accumulating in f32 (C stays f32) */
  bool in16;            /* JS_GEMM, JS_SDPA, JS_SDPA_BWD, JS_CE: the operands are stored as bf16 (2 bytes: the
                           values' JDT_BF16, see job_validate), else f32. Not in the file: job_read sets it */
  /* JS_COMM: args = {out, in}; comm: JC_*; axis and groups of the tp split */
  uint8_t comm;
  int32_t axis, groups;
  /* the forward ops whose work this step does (mplrun --profile): indices into Job.opids,
   * each with its share of the step's modelled time (the shares add up to at most 1: a
   * step of ops with no forward op, such as a gradient's seed, gives its time to none) */
  int32_t nsrc;
  int32_t *src;
  double *src_w;
  /* JS_SDPA (args {q, k, v, out, lse}) and JS_SDPA_BWD (args {q, k, v, out, lse, dout, dq, dk,
     dv}), the fused attention of issue 14: q [batch, heads, M, K], k [batch, kv_heads, N, K],
     v [batch, kv_heads, N, hv], out [batch, heads, M, hv], lse [batch, heads, M] (f32, row-major);
     alpha = the scale; causal: query i sees keys j <= i; prec PREC_BF16: the probabilities (and
     dS) rounded to bf16 before their products */
  int64_t heads, kv_heads, hv;
  bool causal;
  /* JS_CE (args {x, w, targets, loss, dx1, dw1}), the fused cross-entropy of issue 14 item 3
     (mplc --no-fused-ce: none): x [M, K], w [N, K] when tb, else [K, N], targets i32 [M] in
     [0, N), loss f32 [], dx1 like x, dw1 like w. loss = mean over rows of lse - (x w^T)[row,
     target]; dx1, dw1: its gradient for dloss = 1 (the backward's kernels scale them). The
     rows go in blocks of `chunk` (the device's scratch: chunk x N f32 logits); prec
     PREC_BF16: each block's logits and g rounded to bf16 (x and w hold bf16 values) */
  int64_t chunk;
  /* JS_EMB_GRAD (args {idx, dy, out}), an embedding's gradient: idx i32 [M] (the positions'
     rows), dy f32 [M, N], out f32 [K, N]: out[r, :] = the sum of dy[p, :] over the positions p
     whose idx clamped to [0, K) is r, added in position order from 0 (a position whose idx is
     outside [0, K) adds nothing); a row no position names is 0 */
} JobStep;

/* The fused cross-entropy's block of rows for M rows and N classes: a scratch block of at
 * most MPL_CE_SCRATCH bytes (rows x N f32 logits), at least one row, at most M. mplc chooses
 * it (a job carries it), so every device sums dw1 over the same blocks. */
enum { MPL_CE_SCRATCH = 64 << 20 };
static inline int64_t mpl_ce_block_rows(int64_t M, int64_t N) {
  int64_t r = N > 0 ? (int64_t)MPL_CE_SCRATCH / (4 * N) : M;
  if (r < 1) r = 1;
  return r < M ? r : M;
}
/* The floats of the scratch a device holds for a fused cross-entropy of N positions, V
 * classes and blocks of `chunk` rows, outside the arena: the row losses (N doubles), a
 * block of logits, and under bf16 inputs g's bf16 copy. mplc's plan counts it (--mem-limit),
 * and mplrun takes it before training (MplDeviceOps.ce_reserve). */
static inline int64_t mpl_ce_scratch_floats(int64_t chunk, int64_t V, int64_t N, int in16) {
  return chunk * V + 2 * N + (in16 ? (chunk * V + 1) / 2 : 0);
}
/* The largest head size (q's and k's, and v's) of a fused attention step: the GPU kernels
 * keep a row in registers. mplc lowers a larger sdpa to products and a softmax instead. */
enum { MPL_SDPA_MAX_HEAD = 256 };

/* Collectives of tensor parallelism, run by the runtime over the rank's tp group. */
enum { JC_ALLREDUCE, JC_ALLGATHER, JC_TP_ENTER, JC_TP_SLICE, JC_REDUCE_SCATTER };

typedef struct JobProgram {
  int32_t nsteps;
  JobStep *steps;
} JobProgram;

/* Per stage: what one instruction runs. ORDER: JP_FWD..JP_BWD_W match the schedule's passes. */
enum { JP_FWD, JP_BWD_B, JP_BWD_W, JP__COUNT };

typedef struct JobStage {
  int32_t rank;                /* pipeline rank that runs it */
  JobProgram prog[JP__COUNT];  /* @recompute copies run in the backward program that
                                  first reads them */
  int32_t loss_value;          /* value id of the loss if this stage computes it, else -1 */
  int32_t logits_value;        /* first argument of the loss's cross_entropy, else -1 */
} JobStage;

/* Values crossing from stage src to stage dst (activations forward, gradients backward). */
typedef struct JobXfer {
  int32_t src, dst;
  uint8_t grad;       /* 0: activations src -> dst after FWD(src); 1: gradients src -> dst after BWD_B(src) */
  int32_t nvals;
  int32_t *vals;      /* value ids, sent in this order */
} JobXfer;

/* ---- the instruction stream of a pipeline rank -----------------------------------
 * The pipeline part (the proven schedule: passes and messages), then the update phase,
 * which mplc's compiler/update.c emits and runtime/update.c runs as written: the tied
 * gradients exchanged, the dp all-reduce (or ZeRO-1's reduce-scatter), the clipping norm,
 * the optimizer's update of each param's range and ZeRO-1's all-gather. Every dp and tp
 * replica of a pipeline rank runs its stream; "the replica's chunk" of a param is chunk
 * dpi of mpl_dp_chunk. X(NAME, "text", operands). ORDER: job.c's names and the validator
 * come from this list; kinds up to JI_RECV are the pipeline part. */
#define JI_LIST(X)                                                                                     \
  X(FWD, "fwd", "stage mb")                                                                          \
  X(BWD_B, "bwd_b", "stage mb")                                                                      \
  X(BWD_W, "bwd_w", "stage mb")                                                                      \
  X(SEND, "send", "xfer mb")                                                                         \
  X(RECV, "recv", "xfer mb")                                                                         \
  X(TIED_SEND, "tied_send", "param use peer")   /* the accumulator of a local use to pipeline rank peer */ \
  X(GRAD_SUM, "grad_sum", "param")              /* the uses summed in use order, remote ones received */ \
  X(DP_ALLREDUCE, "dp_allreduce", "param")      /* the gradient summed over the replicas */          \
  X(DP_REDUCE_SCATTER, "dp_reduce_scatter", "param") /* ZeRO-1: the replica's chunk summed */      \
  X(NORM_ADD, "norm_add", "param flags")        /* squares of the replica's chunk (JF_TP0: tp index 0 only) */ \
  X(NORM_ALLREDUCE, "norm_allreduce", "")       /* the world's sums: the global norm, the clip coefficient */ \
  X(CLIP, "clip", "param flags")                /* the update range times the clip coefficient */    \
  X(UPDATE, "update", "param flags")            /* the optimizer on the range (JF_CHUNK: the chunk, else all) */ \
  X(DP_ALLGATHER, "dp_allgather", "param")      /* ZeRO-1: the updated chunks to every replica */

typedef enum JobInsKind {
#define X(name, text, ops) JI_##name,
  JI_LIST(X)
#undef X
  JI__COUNT
} JobInsKind;

enum { JF_CHUNK = 1, JF_TP0 = 2 }; /* JobIns.flags */

typedef struct JobIns {
  uint8_t kind;
  int32_t stage;      /* JI_FWD/BWD: the stage; else -1 */
  int32_t mb;         /* the micro-batch of a pass or message; else -1 */
  int32_t xfer;       /* JI_SEND/JI_RECV: index into Job.xfers; else -1 */
  int32_t param;      /* the update phase: index into Job.params; else -1 */
  int32_t use;        /* JI_TIED_SEND: the use */
  int32_t peer;       /* JI_TIED_SEND: the pipeline rank it goes to */
  uint8_t flags;      /* JF_* */
} JobIns;

/* "fwd", ... "dp_allgather" (--inspect, --emit=schedule, traces). */
static inline const char *job_ins_name(int k) {
  static const char *const names[] = {
#define X(name, text, ops) text,
      JI_LIST(X)
#undef X
  };
  return k >= 0 && k < JI__COUNT ? names[k] : "?";
}
static inline bool job_ins_is_update(int k) { return k >= JI_TIED_SEND && k < JI__COUNT; }

/* Chunk d of n elements over dp replicas (ZeRO-1 and the clipping norm): [n*d/dp, n*(d+1)/dp). */
static inline void mpl_dp_chunk(int64_t n, int dp, int d, int64_t *lo, int64_t *len) {
  *lo = n * d / dp;
  *len = n * (d + 1) / dp - *lo;
}

/* ---- memory plan of one rank ---------------------------------------------------- */
typedef struct JobRank {
  int32_t nstages;
  int32_t *stages;      /* stages this rank runs */
  int32_t nins;
  JobIns *ins;
  uint64_t arena_bytes; /* peak: the arena size */
  /* offsets: for value v and micro-batch slot j, offset[v * m + j], or UINT64_MAX if
     the rank never holds it. Params, inputs' per-step buffers and grad accumulators
     use slot 0 for every micro-batch (persistent) — see JobValue.kind. */
  uint64_t *offset;     /* [nvalues * m] */
  /* predicted by the compiler, for the end-of-run comparison */
  double predicted_busy, predicted_bubble;
} JobRank;

/* ---- kernels ----------------------------------------------------------------- */
typedef struct JobKernels {
  uint8_t *llvm_bc;   size_t llvm_bc_len;   /* CPU: LLVM bitcode, all kernels */
  char *cuda_src;     size_t cuda_src_len;  /* GPU: CUDA C source */
  char *ptx;          size_t ptx_len;       /* GPU: PTX from NVRTC (may be empty) */
  int32_t nkernels;
  char **names;       /* kernel function names, index = JobStep.kernel */
} JobKernels;

/* ---- op identities (profiles) ----------------------------------------------------
 * A forward op of the graph as a profile names it: key, its identity, stable from one
 * compilation of the same graph to the next (compiler/profile.c says how it is made), and
 * label, where it is for people ("tanh at model.mpl:14:18"); stage, the stage it runs on
 * (-1: none). */
typedef struct JobOpId {
  char *key, *label;
  int32_t stage;
} JobOpId;

/* ---- the job ----------------------------------------------------------------- */
/* The training config: the train block as mplc's sema_train.c reads it, written into the
 * job as it is and used by the runtime as it is (one struct; job.c stores each enum in a
 * byte). ORDER: the enums' values are the job format's. */
typedef enum SchedKind { SCHED_SEQUENTIAL, SCHED_GPIPE, SCHED_1F1B, SCHED_INTERLEAVED, SCHED_ZB, SCHED_ZBV } SchedKind;
#define SCHED__COUNT (SCHED_ZBV + 1)
typedef enum OptKind { OPT_SGD, OPT_ADAMW } OptKind;
typedef enum LrSchedKind { LR_CONSTANT, LR_COSINE } LrSchedKind;
typedef enum DataKind { DATA_SYNTHETIC, DATA_TOKENS } DataKind;
/* The train key precision (LANGUAGE.md, "Precision"): f32 everywhere; TF32 products where a GPU has
 * them; bf16 mixed precision (products' operands and results rounded to bf16, f32 elsewhere). */
typedef enum PrecKind { PREC_F32, PREC_TF32, PREC_BF16 } PrecKind;
static inline const char *mpl_prec_name(int p) {
  static const char *const names[] = {"f32", "tf32", "bf16"};
  return p >= PREC_F32 && p <= PREC_BF16 ? names[p] : "?";
}

typedef struct TrainConfig {
  DataKind data_kind;
  char *data_path;        /* DATA_TOKENS: the token file (mplc: arena text; a Job: its own copy) */
  int64_t synthetic_n;    /* DATA_SYNTHETIC: examples */
  int64_t batch, seq, microbatches;
  SchedKind schedule;
  int32_t virtual_stages; /* model chunks per pipeline rank: v of interleaved(v), 2 under zbv, else 1 */
  OptKind optimizer;
  double lr, beta1, beta2, eps, weight_decay, momentum;
  LrSchedKind lr_schedule;
  int64_t warmup;
  double min_lr, grad_clip; /* grad_clip 0: none */
  int32_t zero;
  int64_t steps;
  uint64_t seed;
  char *val_path;         /* validation's token file; NULL or "": none (mplc: arena text; a Job: its own copy) */
  int64_t eval_every;     /* evaluate after every eval_every-th step; 0: after the last step only */
  int64_t eval_batches;   /* batches per evaluation, >= 1 */
  PrecKind precision;     /* the products' precision; params, gradients and optimizer state are f32 */
} TrainConfig;
typedef TrainConfig JobTrain;

/* "sequential", "gpipe", "1f1b", "interleaved", "zb", "zbv" (ORDER: SchedKind). */
static inline const char *mpl_sched_name(int k) {
  static const char *const names[] = {"sequential", "gpipe", "1f1b", "interleaved", "zb", "zbv"};
  return k >= 0 && k < SCHED__COUNT ? names[k] : "?";
}

/* The pipeline rank that runs stage `stage` of the pp * v stages of schedule k: the one
 * place this mapping is written (the schedule, the plan, the update phase, the job and its
 * validator use it). zbv's V: rank r holds stages r and 2pp-1-r, so stage 0 and the last
 * stage are both on rank 0 and stages pp-1 and pp both on rank pp-1; every other schedule
 * deals the stages round-robin (interleaved(v): rank r holds r, r + pp, r + 2pp, ...). */
static inline int mpl_stage_rank(int k, int pp, int stage) {
  if (k == SCHED_ZBV && stage >= pp) return 2 * pp - 1 - stage;
  return stage % pp;
}

/* The optimizer state slots per param element: AdamW's two moments, SGD's momentum buffer
 * (none without momentum). */
static inline int mpl_optim_slots(const TrainConfig *t) {
  return t->optimizer == OPT_ADAMW ? 2 : t->momentum != 0 ? 1 : 0;
}

/* The device mesh: dp replicas x tp tensor-parallel ranks x pp pipeline ranks, each axis
 * >= 1 (mpl_mesh_norm). World rank w = (dpi * tp + tpi) * pp + pr: the ranks of one pipeline
 * are pp consecutive world ranks. The one place this arithmetic is written. */
typedef struct MplMesh {
  int32_t dp, pp, tp;
} MplMesh;
/* The most ranks a mesh may have, dp * tp * pp (mplc refuses more; job_read and check_job
 * too): threads or processes. */
enum { MPL_MAX_WORLD = 4096 };
/* The most micro-batches a step may have (mplc refuses more; job_read too). */
enum { MPL_MAX_MICROBATCHES = 65536 };
static inline MplMesh mpl_mesh_norm(MplMesh m) {
  return (MplMesh){m.dp > 0 ? m.dp : 1, m.pp > 0 ? m.pp : 1, m.tp > 0 ? m.tp : 1};
}
static inline int mpl_mesh_size(MplMesh m) { return m.dp * m.tp * m.pp; }
static inline int mpl_mesh_rank(MplMesh m, int dpi, int tpi, int pr) { return (dpi * m.tp + tpi) * m.pp + pr; }
static inline void mpl_mesh_coords(MplMesh m, int w, int *dpi, int *tpi, int *pr) {
  *pr = w % m.pp, *tpi = w / m.pp % m.tp, *dpi = w / (m.pp * m.tp);
}

typedef struct Job {
  char *model_name;
  char *source_name;     /* the .mpl file it came from (for messages) */
  MplMesh mesh;          /* every axis >= 1 (job_read refuses anything else) */
  int32_t nstages;       /* pp * v */
  JobTrain train;
  int32_t nvalues;
  JobValue *values;
  int32_t nparams;
  JobParam *params;      /* sorted by global name */
  int32_t ninputs;
  JobInput *inputs;
  JobStage *stages;      /* [nstages] */
  int32_t nxfers;
  JobXfer *xfers;
  JobRank *ranks;        /* [pp] (dp = tp = 1 in format 1) */
  JobKernels kernels;
  int32_t nchecks;       /* section CHEK (a job without it has none) */
  JobCheck *checks;
  double flops_per_step; /* from the cost model */
  double predicted_bubble, textbook_bubble;
  int32_t loss_ces;      /* the forward cross_entropy ops (fused or not): --sample reads the logits of
                            the one the loss returns, so it needs exactly one */
  double *rank_speed;    /* [pp]: each pipeline rank's device speed as compiled (--device-speed; 1);
                            NULL in a Job built by hand: all 1 */
  int32_t nopids;
  JobOpId *opids;        /* the forward ops that JobStep.src names */
} Job;

/* ---- communication of a step, by kind --------------------------------------------
 * mplc predicts it per world rank (--emit=plan) from the data the instruction streams
 * are made of; mplrun counts it where each message or collective is issued (--comm-stats).
 * Per kind: calls, and payload bytes: the size of the buffer the rank contributes or
 * receives (for a collective step, the larger of its input and output: the whole
 * tensor), not the bytes on the wire (a ring all-reduce over n ranks sends and receives
 * about 2(n-1)/n of its payload per rank). ZeRO-1's reduce-scatter and all-gather of a
 * param over the replicas count, like the all-reduce they replace, one call of the whole
 * param's bytes each (the whole gradient contributed; the whole param ended with): on the
 * wire each sends and receives (n-1)/n of it. A collective of the job's JS_COMM steps
 * names its JC_* code (the others -1: they are not steps of a program).
 * ORDER: none; a new kind is one line here, then counted where the runtime issues it
 * and predicted where mplc's plan walks the same instructions (compiler/plan.c). */
#define MPL_COMM_KINDS(X)                                                                     \
  X(PP_SEND, "pp_send", -1)               /* pipeline: activations or their gradients out */ \
  X(PP_RECV, "pp_recv", -1)               /* ... and in */                                   \
  X(TP_ALLREDUCE, "tp_allreduce", JC_ALLREDUCE)                                               \
  X(TP_ALLGATHER, "tp_allgather", JC_ALLGATHER)                                               \
  X(TP_REDUCE_SCATTER, "tp_reduce_scatter", JC_REDUCE_SCATTER)                                \
  X(DP_ALLREDUCE, "dp_allreduce", -1)     /* gradients summed over the replicas */           \
  X(DP_REDUCE_SCATTER, "dp_reduce_scatter", -1) /* ZeRO-1: each replica's chunk summed */    \
  X(DP_ALLGATHER, "dp_allgather", -1)     /* ZeRO-1: the updated chunks to every replica */  \
  X(TIED_SEND, "tied_send", -1)           /* a tied param's gradient to its other holders */ \
  X(TIED_RECV, "tied_recv", -1)                                                               \
  X(NORM_ALLREDUCE, "norm_allreduce", -1) /* grad_clip: per-param sums of squares, over the world */

typedef enum MplCommKind {
#define X(e, key, jc) MPL_COMM_##e,
  MPL_COMM_KINDS(X)
#undef X
  MPL_COMM__COUNT
} MplCommKind;

typedef struct MplCommCount {
  uint64_t calls, bytes;
} MplCommCount;

/* "pp_send", ...: the kind's name in --emit=plan and in mplrun --comm-stats. */
static inline const char *mpl_comm_kind_name(int k) {
  static const char *const names[] = {
#define X(e, key, jc) key,
      MPL_COMM_KINDS(X)
#undef X
  };
  return k >= 0 && k < MPL_COMM__COUNT ? names[k] : "?";
}

/* The kind of a JS_COMM step's collective (JC_*), or -1: a local copy (TP_ENTER, TP_SLICE). */
static inline int mpl_comm_kind_of_jc(int jc) {
  static const int codes[] = {
#define X(e, key, code) code,
      MPL_COMM_KINDS(X)
#undef X
  };
  for (int k = 0; k < MPL_COMM__COUNT; k++)
    if (codes[k] >= 0 && codes[k] == jc) return k;
  return -1;
}

/* job.c */
int job_write(const Job *job, const char *path, char *err, size_t errlen);
Job *job_read(const char *path, char *err, size_t errlen); /* NULL + message on any problem */
void job_free(Job *job);
int job_validate(const Job *job, char *err, size_t errlen);
/* What job_read derives from a valid job for the executor (JobStep.in16). */
void job_derive(Job *job);
/* "f32", "bf16", "f16", "i32", "bool". */
static inline const char *job_dtype_name(int dt) {
  static const char *const names[] = {"f32", "bf16", "f16", "i32", "bool"};
  return dt >= 0 && dt <= JDT_BOOL ? names[dt] : "?";
}
void job_inspect(const Job *job, FILE *out);              /* mplrun --inspect */

#endif
