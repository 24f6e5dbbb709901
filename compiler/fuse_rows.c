/*
 * fuse_rows.c — what a row kernel stores in its first loop. A row group's kernel goes over
 * each row several times (a reduction's max, its sum, the stores), and the kernel IR's
 * memo does not reach across loops, so a value fused into it is computed again in every
 * loop that reads it. fuse_emit.c stores some values in a first loop instead and loads
 * them in the later ones; this file picks them:
 *  - fuse_row_early: of the values the kernel stores anyway, those that need no row
 *    statistic, that a reduction reads, and that the kernel reads only in their own row;
 *  - fuse_row_keep (fuse.c, when it decides what a group stores): a costly value (a
 *    math-library function in its expression) that two or more loops read, though nothing
 *    outside the kernel does; only the last value before the row statistics, not each
 *    value of a chain.
 *
 * Invariants: a value stored in the first loop is read back only in the row the outer
 * iteration computes (row_local: the other rows are other outer iterations, maybe other
 * threads, not yet stored); only f32 and i32 values, whose store and load give back the
 * registers' bits, so the kernel computes what the unfused ones do.
 */
#include "fuse_int.h"

#include <stdlib.h>
#include <string.h>

/* One group's scan: scratch of the graph's size, allocated once for all its questions. */
typedef struct Rows {
  const Fuse *f;
  const Group *gr;
  int nv;
  char *mark;  /* reads_red's memo: 0 unseen, 1 no, 2 yes */
  char *fed;   /* values a reduction of the group reads (through values computed here) */
  char *seen;  /* a walk's visited set */
  int *stack;
} Rows;

/* v is computed in the group's kernel (a member or an inline view), else loaded. */
static bool here(const Rows *rw, int v) {
  const Fuse *f = rw->f;
  return f->grp[v] == rw->gr->id || (f->view[v] && !f->mat[v]);
}

/* User u of a value is computed in the group's kernel: a member, or an inline view a member
 * reads (directly or through other views; a view is inline wherever it is read, so one read
 * only by other kernels is not this kernel's). */
static bool read_here(const Rows *rw, int u, int depth) {
  const Fuse *f = rw->f;
  if (f->grp[u] == rw->gr->id) return true;
  if (!f->view[u] || f->mat[u] || depth > 16) return false;
  for (int k = f->ustart[u]; k < f->ustart[u + 1]; k++)
    if (read_here(rw, f->users[k], depth + 1)) return true;
  return false;
}

/* An op whose loops go over the row. */
static bool red_like(const Op *op) {
  Cat c = fuse_cat(op->kind);
  return c == CAT_RED || c == CAT_SPECIAL || op->kind == OP_CROSS_ENTROPY;
}

/* The number of loops over the row a reduction runs that read its input. */
static int red_loops(OpKind k) {
  return k == OP_SOFTMAX || k == OP_LOG_SOFTMAX || k == OP_CE_ROWS || k == OP_CE_GRAD ? 2 : 1;
}

/* v needs one of the group's reductions (a row statistic): computable only after them. */
static bool reads_red(Rows *rw, int v) {
  if (rw->mark[v]) return rw->mark[v] == 2;
  const Op *op = OPP(rw->f, v);
  bool r = false;
  if (here(rw, v)) {
    r = red_like(op);
    for (int j = 0; j < op->nin && !r; j++) r = reads_red(rw, op->in[j]);
  }
  rw->mark[v] = r ? 2 : 1;
  return r;
}

/* Marks in seen[] every value op u reads through values computed here. */
static void reach(Rows *rw, int u, char *seen) {
  int n = 0;
  const Op *uo = OPP(rw->f, u);
  for (int j = 0; j < uo->nin; j++)
    if (!seen[uo->in[j]]) seen[uo->in[j]] = 1, rw->stack[n++] = uo->in[j];
  while (n > 0) {
    int w = rw->stack[--n];
    if (!here(rw, w)) continue; /* loaded */
    const Op *wo = OPP(rw->f, w);
    for (int j = 0; j < wo->nin; j++)
      if (!seen[wo->in[j]]) seen[wo->in[j]] = 1, rw->stack[n++] = wo->in[j];
  }
}

bool fuse_trailing(const Shape *d, const bool *red) {
  bool seen = false;
  for (int i = 0; i < d->rank; i++) {
    if (red[i]) seen = true;
    else if (seen) return false;
  }
  return true;
}

/* A reduction over (dom, red) goes over the same rows as one over (gdom, gred): the same
 * shape and axes, or the same contiguous rows under another shape ([B, T, C] and [B*T, C]
 * reduced over C). */
static bool same_rows(const Shape *dom, const bool *red, const Shape *gdom, const bool *gred) {
  if (shape_eq(dom, gdom) && memcmp(red, gred, sizeof(bool) * MPL_MAX_RANK) == 0) return true;
  return fuse_trailing(dom, red) && fuse_trailing(gdom, gred) && shape_numel(dom) == shape_numel(gdom) &&
         fuse_kept_numel(dom, red) == fuse_kept_numel(gdom, gred);
}

/* A row statistic of shape w broadcast into an op of shape out reads, at each element, its
 * own row's entry: out is the domain, and w is the keepdims form (1 on the reduced axes,
 * the domain's size on the kept ones; leading axes of 1 may be missing). [N] into [N, N]
 * reduced over axis 1 puts row j's statistic at [i, j]: another row's. */
static bool reads_own_row(const Shape *w, const Shape *out, const Group *gr) {
  if (!shape_eq(out, &gr->dom) || w->rank > out->rank) return false;
  int lead = out->rank - w->rank;
  for (int i = 0; i < out->rank; i++) {
    int64_t d = i < lead ? 1 : w->d[i - lead];
    if (d != (gr->red[i] ? 1 : out->d[i])) return false;
  }
  return true;
}

/*
 * Every read of v in the group's kernel is in the row being computed: what reads v here,
 * and what reads those in turn, are elementwise ops and reshapes of the domain's size (the
 * same element) or of the rows' number (a row statistic and what is computed from it: the
 * same row, where it is broadcast back in the keepdims form: reads_own_row), and
 * reductions over the group's rows (the row itself); a transpose, a slice or
 * an index op could read v in another row. The walk goes on past the reductions: a slice
 * of a layer norm's output reads its statistics in another row, and so, through their
 * loops, v there (random program 933: t4[:, 1:2, :] of a residual around rmsnorm).
 */
static bool row_local(Rows *rw, int v) {
  const Fuse *f = rw->f;
  int64_t numel = shape_numel(&rw->gr->dom), nrow = fuse_kept_numel(&rw->gr->dom, rw->gr->red);
  int n = 0;
  memset(rw->seen, 0, (size_t)rw->nv);
  rw->stack[n++] = v;
  rw->seen[v] = 1;
  while (n > 0) {
    int w = rw->stack[--n];
    for (int k = f->ustart[w]; k < f->ustart[w + 1]; k++) {
      int u = f->users[k];
      if (!read_here(rw, u, 0)) continue;
      const Op *uo = OPP(f, u), *wo = OPP(f, w);
      /* every edge, also into an op reached before by another: a row statistic read per
         element only where it lands in its own row */
      if (!red_like(uo) && nrow != numel && shape_numel(&wo->shape) == nrow && shape_numel(&uo->shape) == numel &&
          !reads_own_row(&wo->shape, &uo->shape, rw->gr))
        return false;
      if (rw->seen[u]) continue;
      rw->seen[u] = 1;
      if (red_like(uo)) {
        switch (uo->kind) {
        case OP_SUM: case OP_MEAN: case OP_AMAX: case OP_SUM_TO: case OP_SOFTMAX: case OP_LOG_SOFTMAX:
        case OP_CE_ROWS: case OP_CE_GRAD: break;
        default: return false;
        }
        Shape dom;
        bool red[MPL_MAX_RANK];
        fuse_red_spec(f, uo, &dom, red);
        if (!same_rows(&dom, red, &rw->gr->dom, rw->gr->red)) return false;
        rw->stack[n++] = u; /* its result, per element or per row, read in the same row only */
        continue;
      }
      bool same = uo->kind == OP_RESHAPE || (op_info[uo->kind].cls == OPC_E && !(f->view[u] && !f->mat[u]));
      int64_t un = shape_numel(&uo->shape);
      if (!same || (un != numel && un != nrow)) return false;
      rw->stack[n++] = u;
    }
  }
  return true;
}

/* An op that calls a function of the math library (each costs tens of operations). */
static bool costly(OpKind k) {
  switch (k) {
  case OP_EXP: case OP_LOG: case OP_TANH: case OP_SIGMOID: case OP_GELU: case OP_GELU_GRAD: case OP_SILU:
  case OP_SIN: case OP_COS: case OP_POW: return true;
  default: return false;
  }
}

static Rows rows_new(const Fuse *f, const Group *gr) {
  Rows rw = {.f = f, .gr = gr, .nv = f->g->nops};
  rw.mark = calloc((size_t)rw.nv, 3);
  rw.stack = malloc(sizeof(int) * (size_t)rw.nv);
  if (!rw.mark || !rw.stack) die("out of memory");
  rw.fed = rw.mark + rw.nv;
  rw.seen = rw.mark + 2 * rw.nv;
  for (int i = 0; i < gr->n; i++)
    if (red_like(OPP(f, gr->ops[i]))) reach(&rw, gr->ops[i], rw.fed);
  return rw;
}

static void rows_free(Rows *rw) {
  free(rw->mark);
  free(rw->stack);
}

/* The common test: v, of the domain's size, can be stored in the first loop and loaded by
 * the others with nothing changed (f32 or i32, no row statistic, read by a reduction, read
 * only in its own row). */
static bool early_ok(Rows *rw, int v) {
  const Op *op = OPP(rw->f, v);
  if (op->dtype != DT_F32 && op->dtype != DT_I32) return false;
  int64_t n = shape_numel(&op->shape);
  if (op->kind == OP_PARAM_GRAD || n != shape_numel(&rw->gr->dom) || n == fuse_kept_numel(&rw->gr->dom, rw->gr->red))
    return false; /* a row-sized value is stored outside the loops */
  return rw->fed[v] && !reads_red(rw, v) && row_local(rw, v);
}

/* Worth keeping, for fuse_row_keep: v starts the row statistics' part (one of its readers
 * here needs them), something costly is in what the kernel computes for it, and two or
 * more loops read it (a softmax's or a loss's max and sum, one more for the stores that
 * need the statistics). */
static bool worth_keeping(Rows *rw, int v, const bool *store) {
  const Fuse *f = rw->f;
  const Group *gr = rw->gr;
  bool frontier = false;
  for (int k = f->ustart[v]; k < f->ustart[v + 1] && !frontier; k++) {
    int u = f->users[k];
    frontier = read_here(rw, u, 0) && (red_like(OPP(f, u)) || reads_red(rw, u));
  }
  if (!frontier) return false;
  bool cost = costly(OPP(f, v)->kind);
  if (!cost) {
    memset(rw->seen, 0, (size_t)rw->nv);
    reach(rw, v, rw->seen);
    for (int w = 0; w < rw->nv && !cost; w++) cost = rw->seen[w] && here(rw, w) && costly(OPP(f, w)->kind);
  }
  int loops = 0;
  bool stores = false; /* the last loop, the stores that need the statistics, counted once */
  for (int i = 0; cost && i < gr->n && loops < 2; i++) {
    int u = gr->ops[i];
    const Op *uo = OPP(f, u);
    bool red = red_like(uo);
    if (!red && (stores || !store[u] || shape_numel(&uo->shape) != shape_numel(&gr->dom) || !reads_red(rw, u)))
      continue;
    memset(rw->seen, 0, (size_t)rw->nv);
    reach(rw, u, rw->seen);
    if (!rw->seen[v]) continue;
    if (red) loops += red_loops(uo->kind);
    else loops++, stores = true;
  }
  return cost && loops >= 2;
}

void fuse_row_keep(const Fuse *f, const Group *gr, bool *store) {
  Rows rw = rows_new(f, gr);
  for (int i = 0; i < gr->n; i++) {
    int v = gr->ops[i];
    if (!store[v] && OPP(f, v)->dtype == DT_F32 && op_info[OPP(f, v)->kind].cls == OPC_E && early_ok(&rw, v) &&
        worth_keeping(&rw, v, store))
      store[v] = true;
  }
  rows_free(&rw);
}

int fuse_row_early(const Fuse *f, const Group *gr, const int *store, int nstore, int *early) {
  Rows rw = rows_new(f, gr);
  int n = 0;
  for (int i = 0; i < nstore; i++)
    if (early_ok(&rw, store[i])) early[n++] = store[i];
  rows_free(&rw);
  return n;
}
