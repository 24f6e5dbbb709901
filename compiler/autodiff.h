/*
 * autodiff.h — the reference evaluator (refeval.c) and reverse-mode autodiff
 * (autodiff.c) over the graph IR: a pass header of its own, like the others after sema (see mplc.h).
 *
 * Invariants:
 *  - ref_eval is the oracle: float64, plain loops, every op in id order, no state
 *    besides the vals array the caller owns.
 *  - ad_backward only appends ops: forward ids and their attributes never change.
 */
#ifndef MPL_AUTODIFF_H
#define MPL_AUTODIFF_H

#include "mplc.h"

/* ==== refeval.c: the reference evaluator ================================ */

/* What a dropout mask depends on besides the op: (seed, step, micro-batch); a micro-batch
 * below 0 is an evaluation pass, where dropout is the identity. */
typedef struct RefCtx {
  uint64_t seed;
  int64_t step;
  int64_t mb;
} RefCtx;

/*
 * Runs every op of g in id order, in float64. vals has g->nops entries; the caller
 * fills vals[id] (malloc'd, numel doubles, row-major) for every INPUT and PARAM op
 * and every RECV op; every other entry is computed into a malloc'd array (an entry
 * already set from an earlier ref_eval is freed and recomputed). i32 and bool values
 * are stored as doubles. PARAM_GRAD yields a copy of its input; SEND yields NULL;
 * ALLREDUCE and ALLGATHER are the identity (one rank). ctx may be NULL (all zeros).
 * A missing leaf or an out-of-range index is a die().
 */
void ref_eval(const Graph *g, double **vals, const RefCtx *ctx);
/* Frees what ref_eval allocated (not INPUT, PARAM and RECV entries) and NULLs it. */
void ref_free(const Graph *g, double **vals);

/* ==== autodiff.c: reverse mode ============================================ */

/*
 * Appends the backward of g's loss to g: seed FULL(1/(microbatches*dp)), one
 * vector-Jacobian rule per op, contributions to a value summed in consumer id
 * order, one PARAM_GRAD sink per use of each PARAM (key = param id, use = 0, 1, ...
 * in consumer id order). Backward ops that feed only PARAM_GRAD sinks get
 * PH_BWD_W, the others PH_BWD_B. Returns the number of user errors reported to d.
 */
int ad_backward(Graph *g, Diag *d);
/*
 * The same with a choice of what to differentiate: wrt (NULL: every PARAM) marks,
 * per forward op id, the values whose gradient is wanted (e.g. float INPUTs);
 * grad_of (NULL: not wanted), g->nops entries as before the call, receives the op
 * id holding the total gradient of each forward value, or -1 (no gradient, or a
 * PARAM, whose gradient is the sum of its PARAM_GRAD sinks in use order).
 */
int ad_backward_ex(Graph *g, Diag *d, const bool *wrt, int *grad_of);
/* --emit=grad: a summary line, then graph_dump (phase words mark the backward). */
void ad_dump(FILE *out, const Graph *g);

#endif
