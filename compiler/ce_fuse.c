/*
 * ce_fuse.c — the fused cross-entropy (issue 14, item 3; mplc --no-fused-ce turns it off): a pass over the
 * forward graph after shard.c and before the ops' identities (profile.c), the balancer and
 * autodiff. A language model's loss is cross_entropy(x @ w^T, targets): the logits
 * [positions, vocab] (GPT-2 124M at B 8, T 1024: 1.65 GB in f32) exist only to be read by
 * the loss, and the backward's CE_GRAD writes a gradient of the same size. Where the pattern
 * holds, the MATMUL and its CROSS_ENTROPY become one CE_FUSED op (x, w, targets) -> loss and
 * its RESULTs 1 and 2, dx1 and dw1: the loss's gradient with respect to x and w for dloss = 1.
 * The gradient g of the logits is linear in dloss, so the forward computes it (Liger-Kernel's
 * fused linear cross-entropy) and autodiff's rule only scales dx1 and dw1 by dloss (two
 * elementwise MULs: dx's in bwd_b, dw's in bwd_w). The op is a step of its own (fuse.c; the
 * job's JS_CE) that a device runs over blocks of rows: a block's logits [rows, V] by one
 * GEMM, each row's exact log-sum-exp, loss and g = (softmax - onehot) / N in place, then the
 * block's dx1 = g w and dw1 += g^T x: three products of the logits' size, as the unfused
 * pair's. No [positions, vocab] value is left in the graph, so the plan holds none; it holds
 * dx1 and dw1 (w's size) from the forward to the backward, per micro-batch in flight.
 *
 * Why a pass here and not in sema's cross_entropy: whether the logits have another reader
 * (a model returning them, a second loss) is known only once the whole body is built, and
 * the tp layouts only after shard.c; before autodiff so the backward is the fused op's own
 * rule (autodiff.c) and before the identities so a profile names the fused op.
 *
 * It fires only where the fused op computes exactly what the pair computed:
 *  - the CROSS_ENTROPY's logits are a MATMUL read by nothing else (and not the loss);
 *  - the product is x [.., K] @ w^T with w [V, K] (tb) or x @ w with w [K, V], w of rank 2,
 *    x not transposed (ta), the logits [.., V] with x's leading axes (no broadcasting);
 *  - x, w and the logits are f32 (bf16 precision is precision.c's, after autodiff);
 *  - tp = 1: every operand replicated (a split vocabulary or a partial x is left alone);
 *  - the product and the loss share stage and recompute flag.
 * Anything else keeps MATMUL and CROSS_ENTROPY. A fused job holds no logits: mplrun
 * --sample makes the last position's from the step's x and w (runtime/sample.c).
 *
 * Invariants: the new graph keeps the graph IR's invariants (graph_verify); op ids shift
 * (the product is gone, the RESULTs follow their op); every other op is copied unchanged.
 */
#include "mplc.h"

#include <stdlib.h>
#include <string.h>

static bool replicated(const Op *op) { return op->layout.split_dim < 0 && !op->layout.partial; }

/* The product whose logits CROSS_ENTROPY ce reads, when the pair may be fused; else -1. */
static int fusable_product(const Graph *g, const Op *ce, const int *users) {
  const Op *m = g->ops[ce->in[0]], *t = g->ops[ce->in[1]];
  if (m->kind != OP_MATMUL || m->ta || m->dtype != DT_F32 || ce->dtype != DT_F32 || t->dtype != DT_I32) return -1;
  if (users[m->id] != 1 || m->id == g->loss) return -1;
  const Op *x = g->ops[m->in[0]], *w = g->ops[m->in[1]];
  if (x->dtype != DT_F32 || w->dtype != DT_F32 || w->shape.rank != 2 || x->shape.rank < 1) return -1;
  int r = x->shape.rank;
  if (m->shape.rank != r || t->shape.rank != r - 1) return -1;
  for (int i = 0; i < r - 1; i++)
    if (m->shape.d[i] != x->shape.d[i] || t->shape.d[i] != x->shape.d[i]) return -1;
  int64_t K = x->shape.d[r - 1], V = m->shape.d[r - 1];
  if (w->shape.d[m->tb ? 1 : 0] != K || w->shape.d[m->tb ? 0 : 1] != V) return -1;
  if (g->mesh.tp != 1 || !replicated(x) || !replicated(w) || !replicated(m) || !replicated(t) || !replicated(ce))
    return -1;
  /* (@recompute on either does not matter: the fused op makes its gradients in the forward,
     no logits exist to keep or recompute; a marked product was left unfused, changing bits) */
  if (m->stage != ce->stage) return -1;
  return m->id;
}

Graph *ce_fuse(Graph *old) {
  int *users = calloc((size_t)old->nops + 1, sizeof(int)), *prod = malloc(sizeof(int) * ((size_t)old->nops + 1));
  if (!users || !prod) die("out of memory");
  for (int i = 0; i < old->nops; i++)
    for (int j = 0; j < old->ops[i]->nin; j++) users[old->ops[i]->in[j]]++;
  int nfused = 0;
  bool *gone = calloc((size_t)old->nops + 1, 1);
  if (!gone) die("out of memory");
  for (int i = 0; i < old->nops; i++) {
    prod[i] = old->ops[i]->kind == OP_CROSS_ENTROPY ? fusable_product(old, old->ops[i], users) : -1;
    if (prod[i] >= 0) gone[prod[i]] = true, nfused++;
  }
  if (!nfused) {
    free(users), free(prod), free(gone);
    return old;
  }
  Graph *g = graph_new(old->arena);
  Graph keep = *old;
  *g = keep;
  g->ops = NULL;
  g->nops = g->cap = 0;
  int *map = malloc(sizeof(int) * ((size_t)old->nops + 1));
  if (!map) die("out of memory");
  for (int i = 0; i < old->nops; i++) {
    const Op *src = old->ops[i];
    map[i] = -1;
    if (gone[i]) continue;
    int in[5], nin = src->nin;
    const int *from = src->in;
    const Op *m = prod[i] >= 0 ? old->ops[prod[i]] : NULL;
    int fused_in[3] = {0, 0, 0};
    if (m) {
      fused_in[0] = m->in[0], fused_in[1] = m->in[1], fused_in[2] = src->in[1];
      from = fused_in, nin = 3;
    }
    int *ins = nin > 5 ? malloc(sizeof(int) * (size_t)nin) : in;
    if (!ins) die("out of memory");
    for (int j = 0; j < nin; j++) {
      ins[j] = map[from[j]];
      if (ins[j] < 0) die("ce_fuse: %%%d reads the fused product %%%d", i, from[j]);
    }
    Op *op = graph_add(g, m ? OP_CE_FUSED : src->kind, nin, ins, src->loc);
    int id = op->id, *keep_in = op->in;
    *op = *src;
    op->id = id, op->in = keep_in, op->nin = nin;
    if (src->fwd_of >= 0) op->fwd_of = map[src->fwd_of];
    if (ins != in) free(ins);
    map[i] = id;
    if (!m) continue;
    op->kind = OP_CE_FUSED;
    op->tb = m->tb;
    op->recompute = 0; /* its results are its gradients, made in the forward: never recomputed */
    for (int r = 1; r <= 2; r++) { /* dx1 (x's shape), dw1 (w's) */
      Op *res = graph_add(g, OP_RESULT, 1, &id, src->loc);
      int rid = res->id, *rin = res->in;
      *res = *op;
      res->id = rid, res->in = rin, res->nin = 1, res->kind = OP_RESULT, res->axis = r, res->tb = false;
      res->shape = old->ops[m->in[r - 1]]->shape;
      res->dtype = DT_F32;
      res->name = NULL;
    }
  }
  g->loss = old->loss >= 0 ? map[old->loss] : -1;
  free(users), free(prod), free(gone), free(map);
  graph_verify(g);
  return g;
}
