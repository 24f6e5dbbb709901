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
 * Invariant (plan_verify): two buffers whose lifetimes overlap never overlap in the
 * arena; every buffer ends inside arena_bytes.
 */
#ifndef MPL_PLAN_H
#define MPL_PLAN_H

#include "partition.h"
#include "sched.h"

typedef struct PlanStep {
  int n;
  const int *vals; /* value ids the step reads or writes */
} PlanStep;

typedef struct PlanProg {
  int nsteps;
  PlanStep *steps;
} PlanProg;

typedef struct PlanRank {
  uint64_t arena_bytes;
  uint64_t *offset;     /* [nvalues * m]; UINT64_MAX where the rank never holds the value */
  /* bytes by kind, for --emit=plan */
  uint64_t param_bytes, grad_bytes, input_bytes, stash_peak, act_peak;
  int nbufs;
} PlanRank;

typedef struct PlanIn {
  const Graph *g;
  const Partition *part;
  const Schedule *sched;
  PlanProg (*progs)[PASS__COUNT]; /* [nstages][pass] */
  const int *alias_of;            /* [nvalues]: value sharing another's buffer, or -1; may be NULL */
} PlanIn;

/* Plans every rank; returns an array of pp PlanRanks. */
PlanRank *plan_build(Arena *a, const PlanIn *in);

#endif
