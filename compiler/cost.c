/*
 * cost.c — the cost model, and nothing else: what an op costs (FLOPs and bytes) and
 * how long that takes, and from those the predicted seconds of each stage's passes
 * and the FLOPs of a step. Several passes ask it: stage balancing (balance.c: the
 * time of each segment), the schedule (schedule.c: zb places W by the pass times),
 * the simulation (sched_simulate: each rank's busy time, the bubble) and the job's
 * predictions (jobgen.c, --emit=plan).
 *
 * The model is deliberately simple: a matmul costs 2*M*N*K FLOPs, an elementwise op
 * a few FLOPs per element, everything moves its inputs and output once. Time is
 * FLOPs at the GEMM peak plus bytes at the memory bandwidth. It only has to rank
 * splits and predict bubbles, not to be exact.
 *
 * Measured costs replace the model where a profile has them (g->measured, --profile):
 * an op's forward, and once per stage and pass the backward ops derived from one forward
 * op (the profile measured them together); the model's times of the other ops are
 * scaled to the measured ones. A stage's pass times are divided by the speed of its
 * rank's device (g->rank_speed, --device-speed).
 *
 * Invariant: a pure function of the graph (and the partition's pass lists), the same
 * before and after fusion appends its temporaries; sums are taken in op id order, so
 * the figures are the same on every run.
 */
#include "partition.h"
#include "update.h"

#include <stdlib.h>

enum { MODEL_GFLOPS = 150, MODEL_GBS = 20 };

static double matmul_flops(const Graph *g, const Op *op) {
  const Op *a = g->ops[op->in[0]];
  int64_t k = op->ta ? a->shape.d[a->shape.rank - 2] : a->shape.d[a->shape.rank - 1];
  return 2.0 * (double)shape_numel(&op->shape) * (double)k;
}

/* The fused attention (issue 14) counted as the lowered form's products and softmax over the
 * whole T x S (causal or not, as FLOP counts of attention usually are): 2 products forward,
 * 4 backward (dS, dq, dk, dv; the recomputed scores are not counted), a few FLOPs per score.
 * Its bytes are its operands and results: no T x S buffer. A RESULT is counted in its op. */
static double sdpa_flops(const Graph *g, const Op *op) {
  const Shape *q = &g->ops[op->in[0]]->shape, *k = &g->ops[op->in[1]]->shape, *v = &g->ops[op->in[2]]->shape;
  int r = q->rank;
  double scores = (double)shape_numel(q) / (double)q->d[r - 1] * (double)k->d[r - 2];
  double hs = (double)q->d[r - 1], hv = (double)v->d[r - 1];
  return op->kind == OP_SDPA ? scores * (2 * hs + 2 * hv + 5) : scores * (4 * hs + 4 * hv + 8);
}

/* The fused cross-entropy (issue 14, item 3) counted as the ops it replaces, so a step's FLOPs
 * do not depend on the fusion: the forward product (2 N K V), dx's and dw's (4 N K V), and
 * CROSS_ENTROPY's and CE_GRAD's 4 per logit each, all in the forward step (the backward's
 * MULs by dloss count as elementwise ops). Its bytes: operands and results only. */
static double ce_fused_flops(const Graph *g, const Op *op) {
  const Shape *x = &g->ops[op->in[0]]->shape, *w = &g->ops[op->in[1]]->shape;
  double nk = (double)shape_numel(x), v = (double)w->d[op->tb ? 0 : 1], n = nk / (double)x->d[x->rank - 1];
  return 6 * nk * v + 8 * n * v;
}

OpCost cost_op(const Graph *g, const Op *op) {
  OpCost c = {0, (double)op_bytes(op)};
  if (op->kind == OP_RESULT) return (OpCost){0, (double)op_bytes(op)};
  if (op->kind == OP_SDPA || op->kind == OP_SDPA_GRAD) c.flops = sdpa_flops(g, op);
  if (op->kind == OP_CE_FUSED) c.flops = ce_fused_flops(g, op);
  for (int j = 0; j < op->nin; j++) c.bytes += (double)op_bytes(g->ops[op->in[j]]);
  double n = (double)shape_numel(&op->shape);
  switch (op_info[op->kind].cls) {
  case OPC_M: c.flops = matmul_flops(g, op); break;
  case OPC_E: /* a bf16 rounding is bit operations: bytes, no floating-point work (flops per step stay
                 the products' and the f32 ops', as an MFU counts them) */
    c.flops = op->kind == OP_GELU || op->kind == OP_GELU_GRAD ? 10 * n : op->kind == OP_ROUND_BF16 || op->kind == OP_ROUND_F16 ? 0 : n;
    break;
  case OPC_R: c.flops = 4 * (double)shape_numel(&g->ops[op->in[0]]->shape); break;
  case OPC_N: case OPC_G:
    if (!c.flops) c.flops = 4 * (op->nin ? (double)shape_numel(&g->ops[op->in[0]]->shape) : n);
    break;
  case OPC_L: case OPC_X: c.bytes = 0; break;
  default: break;
  }
  return c;
}

double cost_time(OpCost c) { return c.flops / (MODEL_GFLOPS * 1e9) + c.bytes / (MODEL_GBS * 1e9); }

/* The model's time of op, scaled to a profile's measured times when there is one. */
static double modelled(const Graph *g, const Op *op) {
  double t = cost_time(cost_op(g, op));
  const Measured *m = g->measured;
  if (!m) return t;
  int o = op->fwd_of >= 0 ? op->fwd_of : op->id; /* a backward op: its forward op's kind */
  double ks = o < g->nops ? m->kind_scale[g->ops[o]->kind] : 0;
  return t * (ks > 0 ? ks : m->scale);
}

/* Does the profile have forward op `id`? */
static bool measured_op(const Graph *g, int id) {
  const Measured *m = g->measured;
  return m && id >= 0 && id < m->nops && m->fwd[id] >= 0;
}

double cost_fwd_bwd(const Graph *g, const Op *op, const bool *needs_grad) {
  const Measured *m = g->measured;
  if (measured_op(g, op->id)) return m->fwd[op->id] + m->bwd_b[op->id] + m->bwd_w[op->id];
  if (op->kind == OP_CE_FUSED) return modelled(g, op); /* its forward step computes the gradient too */
  /* the backward makes a gradient for each input that needs one (pass 56: a product of
     the model's input and a weight has only the weight's gradient, 2x in all, and an op of
     no param none, 1x; the plan's pass times knew, the balancer's 3x did not) */
  int n = 0;
  for (int j = 0; j < op->nin; j++) n += needs_grad[op->in[j]];
  if (op->kind == OP_MATMUL) return (1 + n) * modelled(g, op);
  return (n ? 3 : 1) * modelled(g, op);
}

/* The time of op in pass k; a backward op of a measured forward op brings the measured
 * backward of all of them, the first time that forward op is seen (seen[origin] != mark):
 * both parts when the schedule makes the backward one pass (part_join_backward). */
static double pass_op_time(const Graph *g, const Op *op, int k, int *seen, int mark, const double *share_b) {
  int o = k == PASS_FWD ? op->id : op->fwd_of;
  if (!measured_op(g, o)) return modelled(g, op);
  const Measured *m = g->measured;
  if (k == PASS_FWD || phase_is_recomp(op->phase)) return m->fwd[o]; /* a @recompute copy: its forward's */
  if (seen[o] == mark) return 0;
  seen[o] = mark;
  double both = m->bwd_b[o] + m->bwd_w[o];
  if (k == PASS_BWD_B && part_joins_backward(g)) return both;
  /* a one-pass profile for a schedule with two passes: its backward split as modelled */
  if (m->one_pass) return k == PASS_BWD_B ? both * share_b[o] : both * (1 - share_b[o]);
  return k == PASS_BWD_B ? m->bwd_b[o] : m->bwd_w[o];
}

/* Per measured forward op: the modelled share of its backward that is input-gradient work
 * (1 where it has no weight-gradient op). */
static double *b_shares(const Graph *g) {
  const Measured *m = g->measured;
  double *b = calloc((size_t)m->nops + 1, sizeof(double)), *w = calloc((size_t)m->nops + 1, sizeof(double));
  if (!b || !w) die("out of memory");
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    int o = op->fwd_of;
    if (o < 0 || o >= m->nops || (op->phase != PH_BWD_B && op->phase != PH_BWD_W)) continue;
    (op->phase == PH_BWD_B ? b : w)[o] += modelled(g, op);
  }
  for (int o = 0; o < m->nops; o++) b[o] = b[o] + w[o] > 0 ? b[o] / (b[o] + w[o]) : 1;
  free(w);
  return b;
}

/* Predicted seconds of each stage's passes on its rank's device (a pass with nothing to
 * do takes 1 ns, so that every pass has a duration). */
static void pass_times(const Partition *p, double *F, double *B, double *W) {
  const Graph *g = p->g;
  int *seen = g->measured ? calloc((size_t)g->measured->nops + 1, sizeof(int)) : NULL;
  double *share_b = g->measured ? b_shares(g) : NULL;
  for (int s = 0; s < p->nstages; s++) {
    double t[PASS__COUNT] = {0};
    double speed = g->rank_speed ? g->rank_speed[graph_stage_rank(g, s)] : 1;
    for (int k = 0; k < PASS__COUNT; k++) {
      for (int i = 0; i < p->st[s].pass[k].n; i++)
        t[k] += pass_op_time(g, g->ops[p->st[s].pass[k].v[i]], k, seen, s * PASS__COUNT + k + 1, share_b);
      t[k] /= speed;
    }
    F[s] = t[PASS_FWD] > 0 ? t[PASS_FWD] : 1e-9;
    B[s] = t[PASS_BWD_B] > 0 ? t[PASS_BWD_B] : 1e-9;
    W[s] = t[PASS_BWD_W] > 0 ? t[PASS_BWD_W] : 1e-9;
  }
  free(seen);
  free(share_b);
}

Costs *cost_partition(Arena *a, const Partition *p) {
  const Graph *g = p->g;
  Costs *c = arena_alloc(a, sizeof *c);
  size_t n = sizeof(double) * (size_t)p->nstages;
  c->F = arena_alloc(a, n), c->B = arena_alloc(a, n), c->W = arena_alloc(a, n);
  pass_times(p, c->F, c->B, c->W);
  for (int i = 0; i < g->nops; i++) /* fusion's temporaries (CE_ROWS) are not the program's ops */
    if (g->ops[i]->kind != OP_CE_ROWS) c->flops += cost_op(g, g->ops[i]).flops;
  /* every world rank's: the graph is one tp rank's (split ops at their part), run once per
     micro-batch by each replica; a replicated op is run by every tp rank */
  c->flops *= (double)g->train.microbatches * g->mesh.dp * g->mesh.tp;
  return c;
}

/* Per element a rank updates: the model moves the accumulator's 4 bytes to zero it (set-up),
 * and the optimizer reads the param, its gradient and its state slots and writes the param and
 * the slots; a profile with element counts measured both (profile.c: Measured). */
void cost_step_ends(const Graph *g, const UpdatePhase *u, double *pre, double *post) {
  const Measured *m = g->measured;
  double slots = mpl_optim_slots(&g->train);
  for (int r = 0; r < u->pp; r++) {
    double elems = 0, speed = g->rank_speed ? g->rank_speed[r] : 1;
    for (int k = 0; k < u->n[r]; k++) elems += (double)upd_state_elems(u, &u->ins[r][k], 0);
    bool meas = m && m->update_s >= 0;
    pre[r] = elems * (meas ? m->setup_s : 4 / (MODEL_GBS * 1e9)) / speed;
    post[r] = elems * (meas ? m->update_s : 4 * (3 + 2 * slots) / (MODEL_GBS * 1e9)) / speed;
  }
}

void cost_dump(FILE *out, const Graph *g) {
  const Measured *m = g->measured;
  if (m) {
    fprintf(out, "costs: measured for %d of %d ops (mplrun --profile %s: %s)", m->nmatched, m->nkeyed, m->path,
            m->summary);
    if (m->nmatched == m->nkeyed) fprintf(out, "; none modelled\n");
    else fprintf(out, ";\n  modelled (cost.c, scaled to the measured ops of their kind, or by %.3g):", m->scale);
    for (int i = 0; i < m->nunmatched_shown; i++) fprintf(out, "%s %s", i ? "," : "", m->unmatched[i]);
    int more = m->nkeyed - m->nmatched - m->nunmatched_shown;
    if (more > 0) fprintf(out, " and %d more", more);
    if (m->nmatched < m->nkeyed) fprintf(out, "\n");
    if (m->update_s >= 0)
      fprintf(out, "  per param element a rank updates: set-up %.3g ns, update phase %.3g ns (measured)\n",
              m->setup_s * 1e9, m->update_s * 1e9);
    else
      fprintf(out, "  set-up and update phase: modelled (the profile has no element counts)\n");
  } else if (g->rank_speed) {
    fprintf(out, "costs: modelled (cost.c)\n");
  }
  if (!g->rank_speed) return;
  fprintf(out, "device speeds (--device-speed):");
  for (int r = 0; r < g->mesh.pp; r++) fprintf(out, "%s rank %d %g", r ? "," : "", r, g->rank_speed[r]);
  fprintf(out, "\n");
}
