/*
 * update.h — the update phase: per pipeline rank, the instructions that turn the
 * backward's gradient accumulators into updated params (update.c).
 *
 * The compiler decides all of it and the runtime runs it as written
 * (runtime/update.c): which tied gradients go where, the dp all-reduce or ZeRO-1's
 * reduce-scatter, who adds which squares to the clipping norm, which range of each
 * param a replica updates and keeps optimizer state for, ZeRO-1's all-gather. The
 * plan (plan.c) counts the bytes and the optimizer state of these very instructions,
 * and --emit=schedule prints them.
 *
 * Invariants (upd_verify):
 *  - on every rank the TIED_SENDs come first: every receive a GRAD_SUM waits for was
 *    sent before any rank blocks in the update phase (sends are eager);
 *  - the dp and tp replicas of a pipeline rank run the same stream, so every dp
 *    collective is entered by all its members in the same order, and NORM_ALLREDUCE,
 *    the one collective of the whole world, is on every rank exactly once, after the
 *    rank's last dp reduction: the phase cannot deadlock after a proven schedule;
 *  - a param's instructions come in the order GRAD_SUM, DP_*, NORM_ADD, CLIP, UPDATE,
 *    DP_ALLGATHER, and params in job order within each kind.
 */
#ifndef MPL_UPDATE_H
#define MPL_UPDATE_H

#include <stdio.h>

#include "partition.h"
#include "../runtime/job.h"

typedef struct UpdatePhase {
  int pp, dp, tp;
  bool zero, clip;   /* ZeRO-1 (zero = 1 and dp > 1); grad_clip */
  int nparams;
  Op *const *params; /* [nparams] PARAM ops in the job's order */
  int *n;            /* [pp] instructions of each rank */
  JobIns **ins;      /* [pp] */
  bool *holds;       /* [pp * nparams]: pipeline rank r keeps param pi */
  int *nuses;        /* [nparams] */
  int **use_rank;    /* [nparams][nuses]: the pipeline rank of each use's accumulator */
} UpdatePhase;

/* The update phase of every pipeline rank of the partition (params sorted as in the job). */
UpdatePhase *upd_build(Arena *a, const Partition *p, Op *const *params, int nparams);
/* Dies (an internal error) when an invariant above does not hold. */
void upd_verify(const UpdatePhase *u);

/* What one update instruction of pipeline rank r communicates, added to c (the kinds of
 * job.h's MPL_COMM_KINDS: the plan's prediction; the runtime counts where it issues). */
void upd_comm(const UpdatePhase *u, int r, const JobIns *ins, MplCommCount *c);
/* The optimizer state elements per slot that instruction keeps on replica dpi (UPDATE:
 * its range; 0 for the others). */
int64_t upd_state_elems(const UpdatePhase *u, const JobIns *ins, int dpi);
/* Are all of param pi's uses on pipeline rank r (its uses then sum in place, in use 0's
 * accumulator)? runtime/update.c asks the same of the job. */
bool upd_local_uses(const UpdatePhase *u, int pi, int r);
/* Bytes of the update phase's device memory on pipeline rank r beyond the optimizer state,
 * as runtime/update.c carves it: a scratch sum for each GRAD_SUM param with a use on another
 * rank, the buffer receiving remote uses, the per-param sums of squares. */
uint64_t upd_scratch_bytes(const UpdatePhase *u, int r);
/* The runtime's size of one carved buffer of n floats (or n bytes / 4 rounded up). */
uint64_t upd_carved(uint64_t bytes);

/* --emit=schedule: rank r's update phase, one instruction per line with param names. */
void upd_dump(FILE *out, const UpdatePhase *u, int r);

#endif
