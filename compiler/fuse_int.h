/*
 * fuse_int.h — fusion's private header, included only by fuse.c (which groups a pass's
 * ops and makes its steps) and fuse_emit.c (which writes each group's kernel).
 */
#ifndef MPL_FUSE_INT_H
#define MPL_FUSE_INT_H

#include "kernel.h"

/* How fusion treats an op (fuse_cat). */
typedef enum Cat { CAT_LEAF, CAT_CONST, CAT_EW, CAT_RED, CAT_SPECIAL, CAT_GEMM, CAT_COMM } Cat;

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

#endif
