/*
 * update.c — the update phase of every pipeline rank (see update.h for the contract).
 *
 * For pipeline rank r, in this order:
 *  1. TIED_SEND: each local use accumulator of a tied param (one kept by several
 *     pipeline ranks) to every other rank that keeps it, params in job order, uses in use
 *     order, peers in rank order;
 *  2. per param with a gradient here (kept here, with at least one use): GRAD_SUM when
 *     it has several uses (the local accumulators and the received ones added in use
 *     order; with one use the accumulator is the gradient), then over the replicas
 *     DP_ALLREDUCE, or with ZeRO-1 (zero = 1, dp > 1) DP_REDUCE_SCATTER;
 *  3. with grad_clip: NORM_ADD on the param's owner (its lowest pipeline rank) for each
 *     param, with JF_TP0 for a param that is whole under tp (only tp index 0 adds it, a
 *     split param's parts are added by every tp index), then NORM_ALLREDUCE on every
 *     rank, then CLIP of each update range;
 *  4. UPDATE of each param's range (JF_CHUNK under ZeRO-1: the replica's chunk);
 *  5. under ZeRO-1, DP_ALLGATHER of each param.
 * Every replica adds the squares of its own chunk of a gradient, with ZeRO-1 or
 * without, so the norm has the same bits either way; sums over the world are in rank
 * order, then over params in job (name) order.
 */
#include "update.h"

#include <stdlib.h>
#include <string.h>

typedef struct Emit {
  Arena *a;
  JobIns *v;
  int n, cap;
} Emit;

static void emit(Emit *e, int kind, int param, int use, int peer, int flags) {
  if (e->n == e->cap) {
    int cap = e->cap ? e->cap * 2 : 64;
    JobIns *v = arena_alloc(e->a, sizeof(JobIns) * (size_t)cap);
    if (e->n) memcpy(v, e->v, sizeof(JobIns) * (size_t)e->n);
    e->v = v, e->cap = cap;
  }
  e->v[e->n++] = (JobIns){.kind = (uint8_t)kind, .stage = -1, .mb = -1, .xfer = -1, .param = param, .use = use,
                          .peer = peer, .flags = (uint8_t)flags};
}

static bool holds(const UpdatePhase *u, int r, int pi) { return u->holds[(size_t)r * u->nparams + pi]; }

static int nholders(const UpdatePhase *u, int pi) {
  int n = 0;
  for (int r = 0; r < u->pp; r++) n += holds(u, r, pi);
  return n;
}

static int owner(const UpdatePhase *u, int pi) {
  for (int r = 0; r < u->pp; r++)
    if (holds(u, r, pi)) return r;
  return -1;
}

static bool has_grad(const UpdatePhase *u, int r, int pi) { return holds(u, r, pi) && u->nuses[pi] > 0; }

/* Which params each pipeline rank keeps, and the rank of each use's accumulator. */
static void find_placement(UpdatePhase *u, Arena *a, const Partition *p) {
  const Graph *g = p->g;
  u->holds = arena_alloc(a, (size_t)(u->pp * u->nparams + 1));
  memset(u->holds, 0, (size_t)(u->pp * u->nparams + 1));
  u->nuses = arena_alloc(a, sizeof(int) * (size_t)(u->nparams + 1));
  u->use_rank = arena_alloc(a, sizeof(int *) * (size_t)(u->nparams + 1));
  /* the index of each param op (by op id): one pass over the ops finds every param's uses */
  int *pk = malloc(sizeof(int) * (size_t)(g->nops + 1));
  if (!pk) die("out of memory");
  for (int i = 0; i < g->nops; i++) pk[i] = -1;
  for (int pi = 0; pi < u->nparams; pi++) {
    int id = u->params[pi]->id;
    pk[id] = pi;
    u->nuses[pi] = 0;
    for (int s = 0; s < p->nstages; s++)
      if (ivec_has(&p->st[s].params, id)) u->holds[(size_t)graph_stage_rank(g, s) * u->nparams + pi] = true;
  }
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->kind == OP_PARAM_GRAD && pk[g->ops[i]->key] >= 0) u->nuses[pk[g->ops[i]->key]]++;
  for (int pi = 0; pi < u->nparams; pi++)
    u->use_rank[pi] = arena_alloc(a, sizeof(int) * (size_t)(u->nuses[pi] + 1));
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_PARAM_GRAD || pk[op->key] < 0) continue;
    int pi = pk[op->key], n = u->nuses[pi];
    if (op->use < 0 || op->use >= n) die("update: %s use %d of %d", u->params[pi]->name, op->use, n);
    u->use_rank[pi][op->use] = graph_stage_rank(g, op->stage >= 0 ? op->stage : 0);
  }
  free(pk);
}

static void emit_rank(UpdatePhase *u, int r, Emit *e) {
  bool zero = u->zero, clip = u->clip;
  int chunk = zero ? JF_CHUNK : 0;
  for (int pi = 0; pi < u->nparams; pi++)
    for (int k = 0; nholders(u, pi) > 1 && holds(u, r, pi) && k < u->nuses[pi]; k++)
      for (int h = 0; u->use_rank[pi][k] == r && h < u->pp; h++)
        if (h != r && holds(u, h, pi)) emit(e, JI_TIED_SEND, pi, k, h, 0);
  for (int pi = 0; pi < u->nparams; pi++) {
    if (!has_grad(u, r, pi)) continue;
    /* several uses, or a copy whose one use (with a gradient) is another rank's: summed
       or received here */
    if (u->nuses[pi] > 1 || !upd_local_uses(u, pi, r)) emit(e, JI_GRAD_SUM, pi, -1, -1, 0);
    if (u->dp > 1) emit(e, zero ? JI_DP_REDUCE_SCATTER : JI_DP_ALLREDUCE, pi, -1, -1, 0);
  }
  if (clip) {
    for (int pi = 0; pi < u->nparams; pi++)
      if (has_grad(u, r, pi) && owner(u, pi) == r)
        emit(e, JI_NORM_ADD, pi, -1, -1, u->tp > 1 && u->params[pi]->layout.split_dim < 0 ? JF_TP0 : 0);
    emit(e, JI_NORM_ALLREDUCE, -1, -1, -1, 0);
    for (int pi = 0; pi < u->nparams; pi++)
      if (has_grad(u, r, pi)) emit(e, JI_CLIP, pi, -1, -1, chunk);
  }
  for (int pi = 0; pi < u->nparams; pi++)
    if (has_grad(u, r, pi)) emit(e, JI_UPDATE, pi, -1, -1, chunk);
  for (int pi = 0; zero && pi < u->nparams; pi++)
    if (has_grad(u, r, pi)) emit(e, JI_DP_ALLGATHER, pi, -1, -1, 0);
}

UpdatePhase *upd_build(Arena *a, const Partition *p, Op *const *params, int nparams) {
  const Graph *g = p->g;
  UpdatePhase *u = arena_alloc(a, sizeof *u);
  *u = (UpdatePhase){.pp = g->mesh.pp, .dp = g->mesh.dp, .tp = g->mesh.tp,
                     .nparams = nparams, .params = params};
  u->zero = u->dp > 1 && g->train.zero, u->clip = g->train.grad_clip > 0;
  find_placement(u, a, p);
  u->n = arena_alloc(a, sizeof(int) * (size_t)u->pp);
  u->ins = arena_alloc(a, sizeof(JobIns *) * (size_t)u->pp);
  for (int r = 0; r < u->pp; r++) {
    Emit e = {.a = a};
    emit_rank(u, r, &e);
    u->n[r] = e.n, u->ins[r] = e.v;
  }
  upd_verify(u);
  return u;
}

/* The position of each kind in a param's order (update.h); TIED_SEND and NORM_ALLREDUCE
 * are not per-param steps of the gradient's life. */
static int kind_rank(int k) {
  switch (k) {
  case JI_GRAD_SUM: return 0;
  case JI_DP_ALLREDUCE: case JI_DP_REDUCE_SCATTER: return 1;
  case JI_NORM_ADD: return 2;
  case JI_CLIP: return 3;
  case JI_UPDATE: return 4;
  case JI_DP_ALLGATHER: return 5;
  default: return -1;
  }
}

void upd_verify(const UpdatePhase *u) {
  for (int r = 0; r < u->pp; r++) {
    int nnorm = 0, *last = calloc((size_t)u->nparams + 1, sizeof(int));
    bool past_sends = false;
    for (int i = 0; i < u->n[r]; i++) {
      const JobIns *in = &u->ins[r][i];
      if (in->kind == JI_TIED_SEND && past_sends) die("update: rank %d: a tied send after a blocking instruction", r);
      past_sends |= in->kind != JI_TIED_SEND;
      nnorm += in->kind == JI_NORM_ALLREDUCE;
      int k = kind_rank(in->kind);
      if (k < 0) continue;
      if (in->param < 0 || in->param >= u->nparams || !has_grad(u, r, in->param))
        die("update: rank %d: %s of param %d, which has no gradient here", r, job_ins_name(in->kind), in->param);
      if (k + 1 <= last[in->param]) die("update: rank %d: %s of %s out of order", r, job_ins_name(in->kind), u->params[in->param]->name);
      last[in->param] = k + 1;
    }
    free(last);
    if (nnorm != (u->clip ? 1 : 0)) die("update: rank %d: %d norm all-reduces", r, nnorm);
  }
}

static uint64_t param_bytes(const UpdatePhase *u, int pi) { return op_bytes(u->params[pi]); }

void upd_comm(const UpdatePhase *u, int r, const JobIns *in, MplCommCount *c) {
  int kind = -1, calls = 1;
  uint64_t b = in->param >= 0 ? param_bytes(u, in->param) : 0;
  switch (in->kind) {
  case JI_TIED_SEND: kind = MPL_COMM_TIED_SEND; break;
  case JI_GRAD_SUM:
    kind = MPL_COMM_TIED_RECV, calls = 0;
    for (int k = 0; k < u->nuses[in->param]; k++) calls += u->use_rank[in->param][k] != r;
    break;
  case JI_DP_ALLREDUCE: kind = MPL_COMM_DP_ALLREDUCE; break;
  case JI_DP_REDUCE_SCATTER: kind = MPL_COMM_DP_REDUCE_SCATTER; break;
  case JI_DP_ALLGATHER: kind = MPL_COMM_DP_ALLGATHER; break;
  case JI_NORM_ALLREDUCE: kind = MPL_COMM_NORM_ALLREDUCE, b = sizeof(double) * (uint64_t)u->nparams; break;
  default: return;
  }
  c[kind].calls += (uint64_t)calls;
  c[kind].bytes += (uint64_t)calls * b;
}

int64_t upd_state_elems(const UpdatePhase *u, const JobIns *in, int dpi) {
  if (in->kind != JI_UPDATE) return 0;
  int64_t n = shape_numel(&u->params[in->param]->shape), lo = 0;
  if (in->flags & JF_CHUNK) mpl_dp_chunk(n, u->dp, dpi, &lo, &n);
  return n;
}

uint64_t upd_carved(uint64_t bytes) { return (bytes + 4 + 255) / 256 * 256; } /* runtime/update.c's align256(b + 4) */

bool upd_local_uses(const UpdatePhase *u, int pi, int r) {
  for (int k = 0; k < u->nuses[pi]; k++)
    if (u->use_rank[pi][k] != r) return false;
  return true;
}

uint64_t upd_scratch_bytes(const UpdatePhase *u, int r) {
  uint64_t b = 0;
  int64_t tmp = 0;
  for (int k = 0; k < u->n[r]; k++) {
    const JobIns *in = &u->ins[r][k];
    if (in->kind != JI_GRAD_SUM || upd_local_uses(u, in->param, r)) continue;
    int64_t n = shape_numel(&u->params[in->param]->shape);
    b += upd_carved((uint64_t)n * 4);
    for (int use = 1; use < u->nuses[in->param]; use++)
      if (u->use_rank[in->param][use] != r && n > tmp) tmp = n;
  }
  /* the receive buffer, then the sums of squares (runtime/update.c's carve) */
  return b + upd_carved((uint64_t)tmp * 4) + (sizeof(double) * ((uint64_t)u->nparams + 1) + 255) / 256 * 256;
}

/* One line per run of instructions of one kind and flags: "  update (chunk) 3: a b c". */
void upd_dump(FILE *out, const UpdatePhase *u, int r) {
  const JobIns *v = u->ins[r];
  for (int i = 0, j; i < u->n[r]; i = j) {
    for (j = i + 1; j < u->n[r] && v[j].kind == v[i].kind && v[j].flags == v[i].flags; j++) {}
    fprintf(out, "  %s%s%s", job_ins_name(v[i].kind), v[i].flags & JF_CHUNK ? " (replica's chunk)" : "",
            v[i].flags & JF_TP0 ? " (on tp index 0)" : "");
    if (v[i].param >= 0) fprintf(out, " %d:", j - i);
    for (int k = i; k < j && v[k].param >= 0; k++) {
      fprintf(out, " %s", u->params[v[k].param]->name);
      if (v[k].kind == JI_TIED_SEND) fprintf(out, "[use %d -> rank %d]", v[k].use, v[k].peer);
    }
    fputc('\n', out);
  }
}
