/*
 * fuse_int.h — fusion's private header, included only by fuse.c (which groups a pass's
 * ops and makes its steps), fuse_emit.c (which writes each group's kernel), fuse_rows.c
 * (what a row kernel stores in its first loop) and fuse_index.c.
 */
#ifndef MPL_FUSE_INT_H
#define MPL_FUSE_INT_H

#include "kernel.h"

/* How fusion treats an op (fuse_cat). */
typedef enum Cat { CAT_LEAF, CAT_CONST, CAT_EW, CAT_RED, CAT_SPECIAL, CAT_GEMM, CAT_COMM, CAT_ATTN, CAT_RESULT } Cat;

/* An open group: the ops of one kernel. */
typedef struct Group {
  int id;
  bool row;           /* row group (has reductions) */
  Shape dom;          /* domain */
  bool red[MPL_MAX_RANK];
  int n, cap;
  int *ops;
} Group;

typedef struct Fuse {
  Arena *a;
  const Graph *g;
  KernelSet *ks;
  Program *p;
  int *pos;          /* op id -> position in the list, -1 if not in it */
  int *ustart, *users; /* consumers of each op (CSR over the whole graph) */
  int *grp;          /* op id -> group id (-1: none) */
  bool *mat;         /* value has a buffer */
  bool *folded_t;    /* TRANSPOSE folded into its GEMM consumers */
  int *gemm_acc;     /* MATMUL -> PARAM_GRAD it accumulates into (or -1) */
  int *ce_rows;      /* CROSS_ENTROPY -> its CE_ROWS temporary (or -1) */
  bool *view;        /* shape op computed inline by its consumers, never a group member */
  bool *done;        /* op lowered */
  int ngroups;
  Group cur;
} Fuse;

static inline const Op *OPP(const Fuse *f, int id) { return f->g->ops[id]; }

/* ==== fuse_emit.c ==== */

/* The emission of one kernel (fuse_emit.c's state), and what fuse_index.c uses of it. */
typedef struct Emit Emit;
/* A callback emitting one element of a reduction at a full domain index. */
typedef int (*ElemFn)(Emit *e, const Op *op, const int *dom_idx, const int *cap);
KBuilder *fuse_emit_builder(Emit *e);
const Fuse *fuse_emit_fuse(Emit *e);
/* Value v at its multi-index idx (instruction ids): computed, inline, or loaded. */
int fuse_emit_value(Emit *e, int v, const int *idx);
/* The kernel argument of value v, added on first use. */
int fuse_emit_arg(Emit *e, int v, KArgMode mode);
int fuse_emit_linearize(Emit *e, const Shape *s, const int *idx);
void fuse_emit_delinearize(Emit *e, const Shape *s, int lin, int *idx);
/* A reduction of op (memoised by tag) over the axes red[] of dom at the row row_idx (kept
 * entries; reduced ones -1): fn's elements combined by kind, in type t; cap: fn's extra
 * values, cap[0] the depth they need. */
int fuse_emit_reduce(Emit *e, const Op *op, int tag, const Shape *dom, const bool *red, const int *row_idx,
                     KRed kind, KType t, ElemFn fn, const int *cap);

/* The category of an op kind. */
Cat fuse_cat(OpKind k);
/* axis (negative: from the end) as an index into a shape of the rank; dies when out of range. */
int fuse_norm_axis(int axis, int rank);
/* The elements of d kept by a reduction over the axes red[]. */
int64_t fuse_kept_numel(const Shape *d, const bool *red);
/* The domain and reduced axes of a reduction-like op. */
void fuse_red_spec(const Fuse *f, const Op *op, Shape *dom, bool *red);
/* The kernel of group gr that stores the members store[0 .. nstore): *args (malloc'd)
 * gets the value of each of its arguments in order, *nargs their count, *n_outer the
 * size of its outer loop. */
Kernel *fuse_kernel(const Fuse *f, const Group *gr, const int *store, int nstore, int **args, int *nargs,
                    int64_t *n_outer);

/* ==== fuse_rows.c: what a row kernel stores in its first loop ==== */

/* Whether the reduced axes red[] of d are its last ones (a row is contiguous). */
bool fuse_trailing(const Shape *d, const bool *red);
/* Row group gr's members that are stored although nothing outside the kernel reads them:
 * costly values several of its loops read. Sets store[v] (indexed by value id) for each. */
void fuse_row_keep(const Fuse *f, const Group *gr, bool *store);
/* Of the values store[0 .. nstore) the row kernel stores, those it stores in its first loop
 * (needing no row statistic, read by a reduction, read only in their own row, f32 or i32):
 * written to early[], their count returned. */
int fuse_row_early(const Fuse *f, const Group *gr, const int *store, int nstore, int *early);

/* ==== fuse_index.c: the kernels of the ops that index by data or by order ==== */

/* GATHER, ONE_HOT, IM2COL (index remaps), ARGMAX, CHECK, COL2IM (row reductions) at idx. */
int fuse_index_member(Emit *e, const Op *op, const int *idx);
/* The domain and reduced axes of ARGMAX, CHECK and COL2IM. */
void fuse_index_red_spec(const Fuse *f, const Op *op, Shape *dom, bool *red);
/* The special kernels (CAT_SPECIAL): CUMSUM, CUMSUM_REV, TOPK and
 * GATHER_GRAD; each outer iteration is one row along the op's axis. */
bool fuse_index_special(OpKind k);
int64_t fuse_index_special_outer(const Fuse *f, const Op *op);
void fuse_index_emit_special(Emit *e, const Op *op);

#endif
