/*
 * jobgen.h — the back of mplc: lowering a partition into fused programs, a proven
 * schedule and a memory plan (jobgen_lower), and writing the job (jobgen_write).
 */
#ifndef MPL_JOBGEN_H
#define MPL_JOBGEN_H

#include "kernel.h"
#include "partition.h"
#include "plan.h"
#include "sched.h"
#include "../runtime/job.h"

typedef struct Lowered {
  Partition *p;
  KernelSet *ks;
  Program *(*progs)[PASS__COUNT];    /* [nstages][pass] */
  PlanProg (*plan_progs)[PASS__COUNT];
  int *alias_of;                     /* [nvalues] */
  Schedule *sched;
  PlanRank *plan;                    /* [pp] */
  PlanWorld *world;                  /* [dp * tp * pp] optimizer state and communication per world rank */
  Op **params;                       /* [nparams] PARAM ops in the job's order (by global name) */
  int nparams;
  UpdatePhase *upd;                  /* each rank's update phase */
  double *F, *B, *W;                 /* predicted seconds per stage and pass */
  SchedTiming timing;
  double flops;                      /* per step */
} Lowered;

Lowered *jobgen_lower(Diag *d, Arena *a, Partition *p);
int jobgen_write(Diag *d, Arena *a, const Lowered *lw, const CompileOptions *opt, const char *source,
                 const char *path);
void jobgen_dump_plan(FILE *out, const Lowered *lw);
void jobgen_dump_kernels(FILE *out, const Lowered *lw);

#endif
