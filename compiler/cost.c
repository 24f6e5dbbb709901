/*
 * cost.c — the cost model (FLOPs and bytes per op) and automatic stage balancing.
 *
 * The model is deliberately simple: a matmul costs 2*M*N*K FLOPs, an elementwise op
 * a few FLOPs per element, everything moves its inputs and output once. Time is
 * FLOPs at the GEMM peak plus bytes at the memory bandwidth. It only has to rank
 * splits and predict bubbles, not to be exact.
 */
#include "partition.h"
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>

enum { MODEL_GFLOPS = 150, MODEL_GBS = 20 };

uint64_t op_bytes(const Op *op) { return (uint64_t)shape_numel(&op->shape) * (uint64_t)dtype_size(op->dtype); }

static double matmul_flops(const Graph *g, const Op *op) {
  const Op *a = g->ops[op->in[0]];
  int64_t k = op->ta ? a->shape.d[a->shape.rank - 2] : a->shape.d[a->shape.rank - 1];
  return 2.0 * (double)shape_numel(&op->shape) * (double)k;
}

OpCost cost_op(const Graph *g, const Op *op) {
  OpCost c = {0, (double)op_bytes(op)};
  for (int j = 0; j < op->nin; j++) c.bytes += (double)op_bytes(g->ops[op->in[j]]);
  double n = (double)shape_numel(&op->shape);
  switch (op_info[op->kind].cls) {
  case OPC_M: c.flops = matmul_flops(g, op); break;
  case OPC_E: c.flops = op->kind == OP_GELU || op->kind == OP_GELU_GRAD ? 10 * n : n; break;
  case OPC_R: c.flops = 4 * (double)shape_numel(&g->ops[op->in[0]]->shape); break;
  case OPC_N: case OPC_G: c.flops = 4 * (op->nin ? (double)shape_numel(&g->ops[op->in[0]]->shape) : n); break;
  case OPC_L: case OPC_X: c.bytes = 0; break;
  default: break;
  }
  return c;
}

double cost_time(OpCost c) { return c.flops / (MODEL_GFLOPS * 1e9) + c.bytes / (MODEL_GBS * 1e9); }

/* Memory a segment pins on its stage: params with grads and two AdamW moments,
 * plus the activations it keeps for every micro-batch in flight (at most pp).
 * slot[] maps each top-level statement to its segment (see work_segments). */
static void segment_costs(const Graph *g, const int *slot, double *cost, double *mem) {
  int pp = g->mesh.pp;
  bool *seen = calloc((size_t)g->nops, 1);
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->seg < 0) continue;
    int k = slot[op->seg];
    cost[k] += 3 * cost_time(cost_op(g, op)); /* forward + backward ~ 3x forward */
    mem[k] += pp * (double)op_bytes(op);
    for (int j = 0; j < op->nin; j++) {
      const Op *in = g->ops[op->in[j]];
      if (in->kind != OP_PARAM || seen[in->id]) continue;
      seen[in->id] = true;
      mem[k] += 4 * (double)op_bytes(in);
    }
  }
  free(seen);
}

/* The balancer's segments are the top-level statements that compute something (have
 * an op with a stage): one that only declares params or makes constants, whose ops
 * are made on each stage that reads them, joins the next such statement (the last
 * one, at the end), so no stage can be left with nothing to run. slot[statement] =
 * its segment; returns the number of segments. */
static int work_segments(const Graph *g, int nstmt, int *slot) {
  bool *work = calloc((size_t)nstmt + 1, 1);
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->seg >= 0 && g->ops[i]->stage >= 0) work[g->ops[i]->seg] = true;
  int nseg = 0;
  for (int t = 0; t < nstmt; t++) nseg += work[t];
  for (int t = nstmt - 1, k = nseg; t >= 0; t--) { /* k: the segment of the next statement with work */
    if (work[t]) k--;
    slot[t] = k < nseg ? k : nseg - 1;
  }
  free(work);
  return nseg;
}

int part_balance(Diag *d, Graph *g, double mem_limit) {
  if (!g->auto_stages || g->nstages <= 1) return 0;
  int nstmt = 0;
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->seg + 1 > nstmt) nstmt = g->ops[i]->seg + 1;
  int nst = g->nstages;
  int *slot = calloc((size_t)nstmt + 1, sizeof(int));
  int nseg = work_segments(g, nstmt, slot);
  if (nseg < nst) {
    char more[96] = "";
    int idle = nstmt - nseg;
    if (idle) snprintf(more, sizeof more, " (not counting %d that only declare%s params or make%s constants)", idle,
                       idle == 1 ? "s" : "", idle == 1 ? "s" : "");
    diag_error(d, g->stages_loc, "cannot balance %d pipeline stages (%s) over %d top-level statement%s of model %s%s", nst,
               g->stages_from, nseg, nseg == 1 ? "" : "s", g->model_name ? g->model_name : "?", more);
    free(slot);
    return 1;
  }
  double *cost = calloc((size_t)nseg, sizeof(double)), *mem = calloc((size_t)nseg, sizeof(double));
  int *first = calloc((size_t)nst, sizeof(int));
  segment_costs(g, slot, cost, mem);
  char err[256];
  int rc = bal_split(nseg, cost, mem, nst, mem_limit, first, err, sizeof err);
  if (rc) diag_error_noloc(d, "stage balancing: %s", err);
  for (int i = 0; !rc && i < g->nops; i++) {
    Op *op = g->ops[i];
    if (op->seg < 0 || op->stage < 0) continue;
    int s = 0;
    while (s + 1 < nst && first[s + 1] <= slot[op->seg]) s++;
    op->stage = s;
  }
  free(slot);
  free(cost);
  free(mem);
  free(first);
  return rc ? 1 : 0;
}
