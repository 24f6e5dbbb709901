/*
 * jobgen.h — the last pass of mplc (jobgen.c): the results of every pass before it,
 * serialised into a Job (runtime/job.h), validated and written.
 */
#ifndef MPL_JOBGEN_H
#define MPL_JOBGEN_H

#include "kernel.h"
#include "partition.h"
#include "plan.h"
#include "sched.h"
#include "../runtime/job.h"

/* What the job is written from: the passes' results, as compiler/main.c runs them. */
typedef struct JobParts {
  const char *source;        /* the program's path, as given to mplc */
  const Partition *part;     /* partition.c; part->g is the graph the value ids refer to */
  const Fused *fused;        /* fuse.c: the programs of every stage, the kernels */
  const Schedule *sched;     /* schedule.c: each rank's instructions */
  const UpdatePhase *upd;    /* update.c: each rank's update phase; the params in the job's order */
  const PlanRank *plan;      /* plan.c: each rank's arena and offsets */
  const SchedTiming *timing; /* sched_simulate: predicted busy time and bubble */
  double flops;              /* cost.c: FLOPs per step */
  const KernelCode *code;    /* codegen.c: LLVM bitcode, CUDA C, PTX */
} JobParts;

/* Writes the job to path; 0, or 1 after a diagnostic (the file cannot be written). */
int jobgen_write(Diag *d, const JobParts *jp, const char *path);

#endif
