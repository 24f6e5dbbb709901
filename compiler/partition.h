/*
 * partition.h — cutting the forward+backward graph by pipeline stage.
 *
 * The partition is what every later pass reads: per stage, the ops of each pass
 * (forward, recompute, input-gradient backward, weight-gradient backward) in id
 * order; the values that cross from one stage to another (activations forward,
 * their gradients backward) — the send/recv pairs; and the params kept on several
 * stages whose gradients are combined before the update.
 *
 * Invariants (part_verify):
 *  - every non-leaf op is in exactly one pass list of its stage, or, when it has no
 *    stage of its own (constants), in a pass list of every stage that uses it;
 *  - every input of an op in stage s's lists is a leaf, is computed on s, or arrives
 *    on s through a transfer whose src is the stage that computes it;
 *  - activations only flow to later stages and gradients only to earlier ones;
 *  - a value marked stash is a forward value read by a backward or recompute op.
 */
#ifndef MPL_PARTITION_H
#define MPL_PARTITION_H

#include "mplc.h"

enum { PASS_FWD, PASS_BWD_B, PASS_BWD_W, PASS__COUNT };
/* "fwd", "bwd_b", "bwd_w" (--emit=partition, --emit=kernels). @recompute copies run in
 * the backward pass that first reads them (PASS_BWD_B, or PASS_BWD_W under zb/zbv). */
const char *part_pass_name(int pass);

typedef struct IntVec {
  int *v;
  int n, cap;
} IntVec;
void ivec_push(Arena *a, IntVec *iv, int x);
bool ivec_has(const IntVec *iv, int x);

typedef struct PartStage {
  IntVec pass[PASS__COUNT]; /* op ids in id order */
  IntVec params;            /* PARAM ops this stage reads */
  IntVec inputs;            /* INPUT ops this stage reads */
  int loss;                 /* the loss op if computed here, else -1 */
  int logits;               /* first argument of the loss's cross_entropy, else -1 */
} PartStage;

typedef struct PartXfer {
  int src, dst;
  bool grad;  /* false: activations after FWD(src); true: gradients after BWD_B(src) */
  IntVec vals;
} PartXfer;

typedef struct Partition {
  Graph *g;        /* the graph the ids refer to (rebuilt when @recompute clones ops) */
  int nstages;
  PartStage *st;
  int nxfers;
  PartXfer *xfers; /* sorted by (grad, src, dst) */
  IntVec tied;     /* PARAM ops whose uses are on several stages */
} Partition;

/* Cuts g (forward + backward) into stages. Returns NULL after reporting errors. */
Partition *part_build(Diag *d, Graph *g);
/* Under a schedule that runs each stage's W pass right after its B pass (every schedule
 * but zb and zbv, which defer W to fill bubbles), the backward is one pass: g's PH_BWD_W
 * ops become PH_BWD_B, in place (before remat.c and part_build). */
void part_join_backward(Graph *g);
bool part_joins_backward(const Graph *g); /* does g's schedule get one backward pass? */
void part_verify(const Partition *p);
/* --emit=partition */
void part_dump(FILE *out, const Partition *p);
/* --emit=dot: Graphviz, stages as clusters labelled with the world ranks that run them,
 * transfers as dashed edges, tp collectives in their own shapes and colours, and with
 * dp > 1 each stage's gradient all-reduce over the replicas; the mesh in the title. */
void part_dot(FILE *out, const Partition *p);

/* ==== cost.c: the cost of a partition (the cost model is in mplc.h) ==== */

typedef struct Costs {
  double *F, *B, *W; /* [nstages] predicted seconds of each stage's forward pass, recompute +
                        input-gradient pass, and weight-gradient pass */
  double flops;      /* one step on the whole mesh: every op of the program once per micro-batch
                        on every world rank that runs it (dp x tp copies of the one-rank graph) */
} Costs;
Costs *cost_partition(Arena *a, const Partition *p);
/* Each pipeline rank's predicted seconds outside its passes in a step: pre[r] before its
 * first pass (the set-up: gradient accumulators zeroed, inputs filled) and post[r] after its
 * last (the update phase: the optimizer over the elements the rank updates). */
struct UpdatePhase;
void cost_step_ends(const Graph *g, const struct UpdatePhase *u, double *pre, double *post);
/* --emit=plan's lines on where the costs come from: measured (a profile: which ops) or
 * modelled, and the devices' speeds; nothing when neither --profile nor --device-speed
 * was given (every cost modelled, every device alike). */
void cost_dump(FILE *out, const Graph *g);

#endif
