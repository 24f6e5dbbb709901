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
 * Invariant: a pure function of the graph (and the partition's pass lists), the same
 * before and after fusion appends its temporaries; sums are taken in op id order, so
 * the figures are the same on every run.
 */
#include "partition.h"

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

OpCost cost_op(const Graph *g, const Op *op) {
  OpCost c = {0, (double)op_bytes(op)};
  if (op->kind == OP_RESULT) return (OpCost){0, (double)op_bytes(op)};
  if (op->kind == OP_SDPA || op->kind == OP_SDPA_GRAD) c.flops = sdpa_flops(g, op);
  for (int j = 0; j < op->nin; j++) c.bytes += (double)op_bytes(g->ops[op->in[j]]);
  double n = (double)shape_numel(&op->shape);
  switch (op_info[op->kind].cls) {
  case OPC_M: c.flops = matmul_flops(g, op); break;
  case OPC_E: /* a bf16 rounding is bit operations: bytes, no floating-point work (flops per step stay
                 the products' and the f32 ops', as an MFU counts them) */
    c.flops = op->kind == OP_GELU || op->kind == OP_GELU_GRAD ? 10 * n : op->kind == OP_ROUND_BF16 ? 0 : n;
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

/* Predicted seconds of each stage's passes (a pass with nothing to do takes 1 ns, so
 * that every pass has a duration). */
static void pass_times(const Partition *p, double *F, double *B, double *W) {
  for (int s = 0; s < p->nstages; s++) {
    double t[PASS__COUNT] = {0};
    for (int k = 0; k < PASS__COUNT; k++)
      for (int i = 0; i < p->st[s].pass[k].n; i++)
        t[k] += cost_time(cost_op(p->g, p->g->ops[p->st[s].pass[k].v[i]]));
    F[s] = t[PASS_FWD] > 0 ? t[PASS_FWD] : 1e-9;
    B[s] = t[PASS_RECOMP] + t[PASS_BWD_B] > 0 ? t[PASS_RECOMP] + t[PASS_BWD_B] : 1e-9;
    W[s] = t[PASS_BWD_W] > 0 ? t[PASS_BWD_W] : 1e-9;
  }
}

Costs *cost_partition(Arena *a, const Partition *p) {
  const Graph *g = p->g;
  Costs *c = arena_alloc(a, sizeof *c);
  size_t n = sizeof(double) * (size_t)p->nstages;
  c->F = arena_alloc(a, n), c->B = arena_alloc(a, n), c->W = arena_alloc(a, n);
  pass_times(p, c->F, c->B, c->W);
  for (int i = 0; i < g->nops; i++) /* fusion's temporaries (CE_ROWS) are not the program's ops */
    if (g->ops[i]->kind != OP_CE_ROWS) c->flops += cost_op(g, g->ops[i]).flops;
  c->flops *= (double)g->train.microbatches;
  return c;
}
