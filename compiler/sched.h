/*
 * sched.h — pipeline schedules: made by schedule.c, proven, timed and printed by
 * sched_sim.c.
 *
 * A schedule is, per pipeline rank, a list of instructions (Ins). Its input (SchedSpec)
 * is plain numbers (pp, v, micro-batches, the stage edges, pass times), never the graph:
 * sched_partition reads them off a Partition, the unit tests write them by hand.
 *
 * Stages 0 .. S-1, S = pp * v; stage s runs on rank mpl_stage_rank(kind, pp, s)
 * (runtime/job.h): s % pp, so that interleaved(v) puts the model chunks r, r + pp,
 * r + 2pp, ... on rank r; under zbv (v = 2) the chunks form a V: rank r holds stages r
 * and 2pp-1-r.
 * Activations flow along the edges (src, dst), src < dst; gradients flow back along
 * them; an edge's flow says which of the two it carries (a stage of no params before a
 * skip connection gets no gradient; a gradient may skip a stage that passes it through
 * unchanged). An edge between two stages of one rank needs no message.
 *
 * Invariants of a built schedule (proved by sched_verify, which sched_build runs):
 *  - every (stage, mb) appears exactly once as FWD, once as BWD_B and once as BWD_W,
 *    on the stage's rank; BWD_W(s, mb) follows BWD_B(s, mb), BWD_B follows FWD;
 *  - FWD(s, mb) is preceded by RECV_ACT for each in-edge of s from another rank and
 *    followed by SEND_ACT for each out-edge to another rank; BWD_B(s, mb) is preceded
 *    by RECV_GRAD for each such out-edge and followed by SEND_GRAD for each such in-edge;
 *  - every send meets exactly one recv; sends are eager (buffered, never block), a recv
 *    blocks until its send has happened; running all ranks together never deadlocks;
 *  - the messages from one rank to another are received in the order they are sent
 *    (the runtime's queues are FIFO per pair of ranks);
 *  - per stage, BWD_W runs in micro-batch order (gradients are summed in that order);
 *  - ALLREDUCE_TIED(g) comes after all backward work, on every rank holding a stage of
 *    tied group g, in group order; OPTIMIZER_STEP is each rank's last instruction.
 */
#ifndef MPL_SCHED_H
#define MPL_SCHED_H

#include <stdio.h>
#include "partition.h"

#define SCHED_MAX_PP 256

/*
 * Instruction kinds. X(NAME, text). For the four communication kinds, `stage` is the
 * stage on this rank and `peer_stage` the stage on the other rank:
 *   SEND_ACT  stage = edge src, peer = edge dst     RECV_ACT  stage = dst, peer = src
 *   SEND_GRAD stage = edge dst, peer = edge src     RECV_GRAD stage = src, peer = dst
 * ALLREDUCE_TIED: stage = the tied group's index; OPTIMIZER_STEP: no operands.
 * Operands that do not apply are -1.
 * ORDER: schedule.c's ins_names table is generated from this list.
 */
#define INS_LIST(X)                                                  \
  X(FWD, "fwd")                                                       \
  X(BWD_B, "bwd_b")                                                   \
  X(BWD_W, "bwd_w")                                                   \
  X(SEND_ACT, "send_act")                                             \
  X(RECV_ACT, "recv_act")                                             \
  X(SEND_GRAD, "send_grad")                                           \
  X(RECV_GRAD, "recv_grad")                                           \
  X(ALLREDUCE_TIED, "allreduce_tied")                                 \
  X(OPTIMIZER_STEP, "optimizer_step")

typedef enum InsKind {
#define X(name, text) INS_##name,
  INS_LIST(X)
#undef X
  INS__COUNT
} InsKind;

const char *ins_name(InsKind k);

typedef struct Ins {
  int kind; /* InsKind */
  int stage, peer_stage, mb;
} Ins;

/* The stages that share one param (a tied embedding); their grads are summed. */
typedef struct TiedGroup {
  int nstages;
  const int *stages;
} TiedGroup;

enum { SCHED_ACT = 1, SCHED_GRAD = 2 };

typedef struct SchedSpec {
  SchedKind kind;
  int pp, v, m;               /* ranks, chunks per rank (interleaved: v; zbv: 2; else 1), micro-batches */
  int nedges;
  const int (*edges)[2];      /* (src, dst), src < dst; duplicates are merged */
  const uint8_t *flow;        /* per edge, what it carries: SCHED_ACT | SCHED_GRAD (NULL: both on every edge) */
  int ntied;
  const TiedGroup *tied;      /* may be NULL when ntied == 0 */
  /* Optional per-stage pass durations (NULL: 1 each) that guide zb's placement of W. */
  const double *F, *B, *W;
} SchedSpec;

typedef struct Schedule {
  SchedKind kind;
  int pp, v, m, nstages;
  int nedges;
  int (*edges)[2];            /* merged, sorted by (src, dst) */
  uint8_t *flow;              /* per merged edge: SCHED_ACT (src's activations forward), SCHED_GRAD
                                 (gradients back to src; none when no gradient crosses: a stage of
                                 no params before a skip connection) */
  int ntied;
  TiedGroup *tied;
  int *nins;                  /* per rank */
  Ins **ins;                  /* per rank */
} Schedule;

typedef struct SchedTiming {
  int pp;
  double makespan;
  double bubble;              /* 1 - sum(busy) / (pp * makespan) */
  double busy[SCHED_MAX_PP];  /* per rank: time spent in FWD, BWD_B, BWD_W (and, for a step, the update) */
} SchedTiming;

/* "sequential", "gpipe", "1f1b", "interleaved", "zb", "zbv". */
const char *sched_name(SchedKind k);
/* Parses a --schedule value: a name, or "interleaved(v)"; v is 1 for the others. */
bool sched_parse(const char *s, SchedKind *kind, int *v);

/*
 * Builds the schedule and proves it (sched_verify). On a user error (bad pp, v, m,
 * edge) or a schedule that cannot be proven, returns NULL with a message in err.
 */
Schedule *sched_build(Arena *a, const SchedSpec *spec, char *err, size_t errlen);

/*
 * The schedule pass: the schedule of the program's train settings for partition p,
 * with its stage edges (the transfers), its tied groups (the tied params' stages) and
 * the cost model's pass times (cost.c), which place zb's W passes. NULL after a
 * diagnostic when it cannot be built or proven.
 */
Schedule *sched_partition(Diag *d, Arena *a, const Partition *p, const Costs *cost);

/*
 * The proof: runs all ranks' lists together (eager sends, blocking recvs, collective
 * all-reduces) and checks the invariants above. False with a message naming the
 * ranks and the instruction each is stuck on.
 */
bool sched_verify(const Schedule *s, char *err, size_t errlen);

/*
 * Timed run of a proven schedule: FWD/BWD_B/BWD_W of stage s take F[s]/B[s]/W[s]
 * (NULL: 1), a message arrives `latency` after its send, everything else takes no time.
 * For a whole step (the plan's prediction) rank r starts its list after pre[r] (the set-up)
 * and ends it with post[r] of busy time (the update phase), which no other rank waits for
 * (grad_clip's norm, which they do wait for, is not modelled); pre and post may be NULL.
 */
void sched_simulate(const Schedule *s, const double *F, const double *B, const double *W,
                    double latency, const double *pre, const double *post, SchedTiming *out);

/* The textbook bubble of gpipe and 1f1b with equal stages: (p-1)/(m+p-1). */
double sched_textbook_bubble(int p, int m);

/* The textbook bubble of schedule kind k with equal stages, and its formula: sequential
 * (p-1)/p, interleaved(v) (p-1)/(v*m+p-1), gpipe and 1f1b (p-1)/(m+p-1); zb and zbv have
 * no closed form: 1f1b's, named so. */
double sched_kind_bubble(SchedKind k, int p, int v, int m, const char **formula);

/* Most (stage, mb) pairs of `rank` whose FWD has run and whose BWD_W has not. */
int sched_peak_inflight(const Schedule *s, int rank);

/*
 * --emit=schedule: a table whose rows are the time slots of a run with unit pass
 * durations and whose columns are the ranks, then each rank's instruction list.
 */
void sched_dump(FILE *out, const Schedule *s);

/* The rank that runs stage `stage`. */
static inline int sched_stage_rank(const Schedule *s, int stage) { return mpl_stage_rank(s->kind, s->pp, stage); }
/* The duration of a pass of `stage` from a table of pass times (NULL: 1). */
static inline double sched_pass_time(const double *t, int stage) { return t ? t[stage] : 1.0; }
/* The message a send or recv instruction moves, as an index in 0 .. 2 * nedges * m - 1
 * (activations, then gradients; by edge, then micro-batch); -1 for another instruction
 * or an edge the schedule does not have. */
int sched_msg_index(const Schedule *s, const Ins *in);
/* The rank at the other end of a send or recv. */
static inline int sched_peer_rank(const Schedule *s, const Ins *in) { return sched_stage_rank(s, in->peer_stage); }
/* Does `rank` hold a stage of tied group g? */
bool sched_tied_on_rank(const Schedule *s, int g, int rank);

/* A message into err[errlen] (nothing when err is NULL). */
void sched_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
