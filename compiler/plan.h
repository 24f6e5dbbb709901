/*
 * plan.h — the memory plan: every buffer of a rank at a fixed offset in one arena.
 *
 * Input: the rank's instruction stream (the schedule) and, per stage and pass, the
 * steps the executor runs, each listing the values it touches. Liveness of every
 * (value, micro-batch) is computed over the whole stream, so the stashes of the
 * micro-batches in flight are included; params, gradient accumulators and the
 * step's input data are live throughout. Offsets are then assigned greedily
 * (largest first, lowest free address), 64-byte aligned.
 *
 * Invariant (plan_overlap, checked on every plan): two buffers whose lifetimes overlap
 * never overlap in the arena; every buffer ends inside arena_bytes.
 *
 * The mesh (plan_world): the dp x tp x pp world ranks share their pipeline rank's
 * arena; per world rank, the optimizer state it keeps and the messages and collectives
 * of one step by kind, counted from the same instruction streams, programs, transfers
 * and param placement the job is written from, in the order the runtime issues them.
 * Invariant (tests/e2e/comm_volume.sh): mplrun --comm-stats measures exactly these.
 */
#ifndef MPL_PLAN_H
#define MPL_PLAN_H

#include "kernel.h"
#include "partition.h"
#include "sched.h"
#include "update.h"
#include "../runtime/job.h"

typedef struct PlanStep {
  int n;
  const int *vals;     /* value ids the step reads or writes */
  int comm;            /* a collective that communicates: its MplCommKind; else -1 */
  uint64_t comm_bytes; /* its payload (see MPL_COMM_KINDS in runtime/job.h) */
} PlanStep;

typedef struct PlanProg {
  int nsteps;
  PlanStep *steps;
} PlanProg;

/* One buffer of a rank's arena: a value (of one micro-batch) from its first to its last use. */
typedef struct PlanInterval {
  int value, mb;      /* mb = -1: persistent (one buffer for every micro-batch) */
  int64_t start, end; /* inclusive times */
  uint64_t size, offset;
} PlanInterval;

/* Two of the n buffers live at one time at overlapping offsets: the index of one (the other
 * in *other), or -1 when there are none. */
int plan_overlap(const PlanInterval *iv, int n, int *other);

typedef struct PlanRank {
  uint64_t arena_bytes;
  uint64_t *offset;     /* [nvalues * m]; UINT64_MAX where the rank never holds the value */
  /* bytes by kind, for --emit=plan */
  uint64_t param_bytes, grad_bytes, input_bytes, stash_peak, act_peak;
  /* outside the arena: the largest fused cross-entropy's block of logits and row state, which
     the device holds (mpl_ce_scratch_floats); --mem-limit counts it */
  uint64_t ce_scratch;
} PlanRank;

typedef struct PlanIn {
  const Graph *g;
  const Partition *part;
  const Schedule *sched;
  PlanProg (*progs)[PASS__COUNT]; /* [nstages][pass] */
  const int *alias_of;            /* [nvalues]: value sharing another's buffer, or -1; may be NULL */
  Op *const *params;              /* [nparams] PARAM ops in the job's order (by global name) */
  int nparams;
  const UpdatePhase *upd;         /* each rank's update phase (it replaces OPTIMIZER_STEP) */
} PlanIn;

/* The transfer a send or receive instruction moves (from the sending stage to the
 * receiving one, activations or gradients); NULL for any other instruction or when the
 * partition has no such transfer. */
const PartXfer *plan_xfer_of(const Partition *p, const Ins *ins);

/* The plan's input from the passes before it: each stage's programs as the values of
 * their steps (and the payload of each collective), the aliases (reshapes sharing a
 * buffer), and the params in the job's order (those of the update phase). */
PlanIn plan_input(Arena *a, const Partition *p, const Fused *fu, const Schedule *s, const UpdatePhase *u);

/* Plans every rank; returns an array of pp PlanRanks. */
PlanRank *plan_build(Arena *a, const PlanIn *in);

/* --mem-limit: one error for each rank whose arena is larger; returns the number of errors. */
int plan_check_limit(Diag *d, const PlanRank *pr, int pp, double mem_limit);

/* The job's code of a tp collective (JC_*, runtime/job.h): the plan counts by it, the
 * job writes it. Dies on an op that is not one. */
uint8_t plan_comm_code(OpKind k);

/* One world rank w = (dpi * tp + tpi) * pp + pr of the dp x tp x pp mesh: what differs
 * from the other ranks of its pipeline rank pr (whose PlanRank it shares). */
typedef struct PlanWorld {
  int w, dpi, tpi, pr;
  uint64_t opt_bytes;                  /* optimizer state (ZeRO-1: this replica's share) */
  uint64_t scratch_bytes;              /* the update phase's other memory (upd_scratch_bytes) */
  MplCommCount comm[MPL_COMM__COUNT];  /* one step's messages and collectives, by kind */
} PlanWorld;

/* Every world rank's step as the runtime runs it: the pipeline's sends and receives and
 * the programs' collectives from the rank's instruction stream, then what its update
 * phase's instructions communicate (upd_comm) and the optimizer state they keep
 * (upd_state_elems). [dp * tp * pp]. */
PlanWorld *plan_world(Arena *a, const PlanIn *in, const PlanRank *pr);

/* --emit=plan: the step's totals (FLOPs, communication, bubble predicted by the
 * simulation and textbook), then per pipeline rank the groups of world ranks with the
 * same figures, each with its memory, predicted busy time and communication. */
void plan_dump(FILE *out, const PlanIn *in, const PlanRank *pr, const PlanWorld *pw, const SchedTiming *timing,
               double flops);

#endif
