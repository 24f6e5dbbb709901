/*
 * mplc.h — the compiler's internal header, in sections that follow the pipeline:
 *   graph.c     the graph IR (forward and backward, typed, placed), its dump and verifier
 *   shard.c     tensor parallelism: the graph rewritten per tp rank
 *   cost.c      the cost model: FLOPs, bytes and seconds of an op
 *   balance.c   automatic stage balancing: top-level statements cut into stages
 *   precision.c bf16 mixed precision: products' operands and results rounded (after autodiff)
 *   profile.c   the forward ops' identities, and a profile matched to them
 *   sema*.c     AST -> forward graph IR (the front end)
 *   Later passes declare their entry points in their own headers (autodiff.h, partition.h,
 *   sched.h, plan.h, kernel.h, jobgen.h), which include this one.
 *
 * Graph IR invariants (checked by graph_verify):
 *  - ops are in topological order: every input id is smaller than the op's id;
 *  - ops[i]->id == i; every shape is static and concrete;
 *  - elementwise ops broadcast their inputs NumPy-style to the op's shape;
 *  - a param is one PARAM op, identified by its global name (unique).
 */
#ifndef MPL_MPLC_H
#define MPL_MPLC_H

#include "../lang/ast.h"
#include "../runtime/job.h"

#define MPL_MAX_RANK 8

/* ==== graph.c ========================================================= */

typedef enum DType { DT_F32, DT_BF16, DT_F16, DT_I32, DT_BOOL, DT__COUNT } DType;
const char *dtype_name(DType t);
/* x rounded to the nearest bf16 / f16 value, ties to even (bf16: f32's exponent range,
 * subnormals down to 2^-133; f16: 11 significant bits, subnormals down to 2^-24); past the
 * largest value infinite; NaN stays NaN (the float64 reference's roundings, and cast's at
 * compile time). */
double dtype_round_bf16(double x);
double dtype_round_f16(double x);
int dtype_size(DType t);

typedef struct Shape {
  int rank;
  int64_t d[MPL_MAX_RANK];
} Shape;
int64_t shape_numel(const Shape *s);
bool shape_eq(const Shape *a, const Shape *b);
/* "[2, 3, 4]" into buf (returns buf). */
char *shape_str(const Shape *s, char *buf, size_t n);
/* NumPy broadcast of a and b into out; false if incompatible. */
bool shape_broadcast(const Shape *a, const Shape *b, Shape *out);

/*
 * The primitive ops. X(NAME, nin, kind): nin is the input count (-1: variadic);
 * kind: E elementwise, R reduction-like, S shape, M matmul, N neural, C creation,
 * L leaf, G backward helper, X communication.
 * ORDER: graph.c's op_info table is generated from this list.
 */
#define OP_LIST(X)                                                              \
  /* leaves */                                                                  \
  X(INPUT, 0, L)       /* name: model input name */                             \
  X(PARAM, 0, L)       /* name: global name; init, init_a, init_b, shard_* */  \
  /* creation */                                                                \
  X(FULL, 0, C)        /* value; shape (rank 0 for a scalar constant) */        \
  X(ARANGE, 0, C)      /* i32 [n] */                                            \
  X(CAUSAL_MASK, 0, C) /* bool [T, T], true on and below the diagonal */        \
  /* elementwise, unary */                                                      \
  X(NEG, 1, E) X(EXP, 1, E) X(LOG, 1, E) X(SQRT, 1, E) X(RSQRT, 1, E)          \
  X(TANH, 1, E) X(SIGMOID, 1, E) X(RELU, 1, E) X(GELU, 1, E) X(ABS, 1, E)      \
  X(SIGN, 1, E)                                                                 \
  X(POW, 1, E)         /* value: the exponent c */                              \
  X(CAST, 1, E)        /* to op->dtype */                                       \
  X(NOT, 1, E)                                                                  \
  /* elementwise, binary (broadcasting) */                                      \
  X(ADD, 2, E) X(SUB, 2, E) X(MUL, 2, E) X(DIV, 2, E)                           \
  X(MAXIMUM, 2, E) X(MINIMUM, 2, E)                                             \
  X(EQ, 2, E) X(NE, 2, E) X(LT, 2, E) X(LE, 2, E) X(GT, 2, E) X(GE, 2, E)       \
  X(AND, 2, E) X(OR, 2, E)                                                      \
  X(GELU_GRAD, 2, E)   /* (x, dy) -> dy * gelu'(x) */                           \
  X(RELU_GRAD, 2, E)   /* (x, dy) -> x > 0 ? dy : 0 */                          \
  X(WHERE, 3, E)       /* (mask, a, b) */                                       \
  /* reductions over one axis (axis = AXIS_ALL: every element) */              \
  X(SUM, 1, R) X(MEAN, 1, R) X(AMAX, 1, R)  /* axis, keepdims */               \
  X(SOFTMAX, 1, R) X(LOG_SOFTMAX, 1, R)     /* axis */                          \
  /* shape */                                                                   \
  X(RESHAPE, 1, S)                                                              \
  X(TRANSPOSE, 1, S)   /* axis, axis2: the two dims swapped */                  \
  X(SLICE, 1, S)       /* axis, begin, end */                                   \
  X(PAD, 1, S)         /* axis, begin: place input at begin of op's shape; 0 elsewhere */ \
  X(CONCAT, -1, S)     /* axis */                                               \
  X(EXPAND, 1, S)      /* broadcast input to op's shape */                      \
  X(SUM_TO, 1, S)      /* sum over broadcast dims down to op's shape */         \
  /* matrix product, batched over leading dims with broadcasting */             \
  X(MATMUL, 2, M)      /* ta, tb: transpose the last two dims of a / b */       \
  /* neural */                                                                  \
  X(EMBEDDING, 2, N)   /* (idx i32, weight [rows, cols]) */                     \
  X(EMBEDDING_GRAD, 2, G) /* (idx, dy) -> [rows, cols], summed in position order */ \
  X(CROSS_ENTROPY, 2, N)  /* (logits, targets) -> f32 [] mean over positions */ \
  X(CE_GRAD, 3, G)     /* (logits, targets, g) -> (softmax - onehot) * g / N */ \
  X(CE_ROWS, 2, G)     /* (logits, targets) -> f32 [positions]: each position's loss; \
                          key: its CROSS_ENTROPY. A temporary that fuse.c adds so the \
                          loss is per-row kernels plus one sum in row order */        \
  X(DROPOUT, 1, N)     /* value: p; key: mask key (seed, step, key, whole index) */ \
  /* v2 ops with kernels of their own (issue 13, item 1; fuse_index.c) */         \
  X(SIN, 1, E) X(COS, 1, E) X(FLOOR, 1, E) X(SILU, 1, E)                        \
  X(REM, 2, E)         /* torch.remainder (the sign of b); i32: x % 0 is 0, CHECK reports it */ \
  X(ARGMAX, 1, R)      /* axis, keepdims: i32, the first index of the maximum */ \
  X(CUMSUM, 1, R)      /* axis: inclusive prefix sums, summed in index order */  \
  X(CUMSUM_REV, 1, R)  /* axis: suffix sums y_i = sum_{j >= i} x_j (CUMSUM's gradient) */ \
  X(TOPK, 1, R)        /* axis: i32 indices of the k = shape[axis] largest, descending, \
                          ties to the lower index (topk's values are a GATHER by them) */ \
  X(GATHER, 2, N)      /* (x, idx i32) axis: torch.gather; an index is clamped into range */ \
  X(GATHER_GRAD, 2, G) /* (idx, dy) axis -> x's shape: dy summed where gathered, in index order */ \
  X(ONE_HOT, 1, N)     /* i32 [...] -> f32 [..., n]: 1 where the index is the position */ \
  X(IM2COL, 1, S)      /* [N, C, H, W] -> [N, C*kh*kw, Ho*Wo] (conv2d's patches, zero padded): \
                          axis = kh, axis2 = kw, begin = stride, end = padding */ \
  X(COL2IM, 1, G)      /* IM2COL's gradient, same attributes: patches summed back to [N, C, H, W] */ \
  X(CHECK, 1, N)       /* i32 []: the elements of i32 x that op kind `key` rejects at run time \
                          (GATHER: outside [0, value); REM: zero); the runtime stops on non-zero */ \
  X(ROUND_BF16, 1, E)  /* f32 -> f32: the nearest bf16 value, ties to even; NaN stays NaN. Only \
                          precision.c makes it (precision = bf16), after autodiff: no gradient */ \
  /* fused attention (issue 14, item 2): one step each, flash attention's tiles; a RESULT op \
     names each further value an op writes (made with it, placed with it, no kernel) */ \
  X(SDPA, 3, N)        /* (q [.., H, T, hs], k [.., Hkv, S, hs], v [.., Hkv, S, hv]) -> [.., H, T, hv]: \
                          softmax(q k^T * value, masked above the diagonal when causal) v, query \
                          head h on kv head h / (H / Hkv); RESULT 1: lse f32 [.., H, T] */ \
  X(SDPA_GRAD, 6, G)   /* (q, k, v, out, lse, dout) -> dq; RESULT 1: dk, RESULT 2: dv (value, causal \
                          as its SDPA's); the probabilities recomputed from lse */ \
  /* fused cross-entropy (issue 14, item 3; ce_fuse.c): a product's logits and their \
     cross_entropy in one step over chunks of classes, no [positions, classes] buffer */ \
  X(CE_FUSED, 3, N)    /* (x [.., K], w [V, K] (tb) or [K, V], targets i32 [..]) -> f32 []: \
                          cross_entropy(x @ w^T (tb) or x @ w, targets); RESULT 1: dx1 (x's \
                          shape), RESULT 2: dw1 (w's): the loss's gradient for dloss = 1; the \
                          backward only scales them by dloss (autodiff.c) */ \
  X(RESULT, 1, G)      /* axis: result number (>= 1) of its input, an SDPA, SDPA_GRAD or CE_FUSED */ \
  /* training */                                                                \
  X(PARAM_GRAD, 1, G)  /* sink: accumulate input into grad accumulator        \
                          (param = key, use = use index) */                     \
  /* communication (inserted by partition and sharding) */                     \
  X(SEND, 1, X)        /* peer: destination stage, tag */                       \
  X(RECV, 0, X)        /* peer: source stage, tag; shape and dtype */           \
  X(ALLREDUCE, 1, X)   /* sum over the tp group */                              \
  X(ALLGATHER, 1, X)   /* axis, key = groups: gather the split input over the tp group */ \
  X(TP_ENTER, 1, X)    /* identity; its gradient is all-reduced over the tp group */ \
  X(TP_SLICE, 1, X)    /* axis, key = groups: this tp rank's part of a whole value */ \
  X(REDUCE_SCATTER, 1, X) /* axis, key = groups: this tp rank's part of the sum of partial sums */ \
  /* half types (precision.c's prec_lower_half) */                              \
  X(ROUND_F16, 1, E)   /* f32 -> f32: the nearest f16 value, ties to even; past 65504 infinite; \
                          NaN stays NaN */

typedef enum OpKind {
#define X(name, nin, kind) OP_##name,
  OP_LIST(X)
#undef X
  OP__COUNT
} OpKind;

typedef enum OpClass {
  OPC_L, OPC_C, OPC_E, OPC_R, OPC_S, OPC_M, OPC_N, OPC_G, OPC_X
} OpClass;

typedef struct OpInfo {
  const char *name; /* lower case, as printed: "matmul" */
  int nin;          /* -1: variadic */
  OpClass cls;
} OpInfo;
extern const OpInfo op_info[OP__COUNT];

#define AXIS_ALL (-100)

typedef enum InitKind { INIT_ZEROS, INIT_ONES, INIT_NORMAL, INIT_UNIFORM } InitKind;

/* Which pass of a training step an op belongs to. */
typedef enum Phase {
  PH_FWD,    /* forward */
  PH_BWD_B,  /* backward, input-gradient part */
  PH_BWD_W,  /* backward, weight-gradient part (only feeds PARAM_GRAD) */
  PH_RECOMP,   /* a forward op rerun in the input-gradient pass (@recompute) */
  PH_RECOMP_W, /* one rerun in the weight-gradient pass: only that pass reads it (zb, zbv) */
} Phase;
/* A @recompute copy, in either backward pass. */
static inline bool phase_is_recomp(Phase ph) { return ph == PH_RECOMP || ph == PH_RECOMP_W; }

/* The user's call that led into a stdlib def, shared by the ops that def makes:
 * errors about those ops point at the call, with a note at the stdlib line. */
typedef struct CallSite {
  Loc loc;            /* the call, in the user's file */
  const char *inside; /* "nn.attention (called by nn.block)" */
} CallSite;

/* tp layout of a value: replicated, split on one dim, or partial sums. */
typedef struct Layout {
  int split_dim; /* -1: not split */
  bool partial;  /* holds a partial sum over the tp group */
  int groups;    /* @shard(dim, groups = g); 1 otherwise */
} Layout;

typedef struct Op {
  int id;
  OpKind kind;
  int nin;
  int *in;       /* op ids */
  Shape shape;   /* of the output */
  DType dtype;
  int stage;     /* -1: none (leaves and creation ops: made where used) */
  Phase phase;
  Layout layout;
  Loc loc;       /* source location (for errors and dumps) */
  Loc stage_loc; /* where the stage was set (for notes); line 0 if inherited from nothing */
  const CallSite *site; /* made inside a stdlib def: the user's call that led there; else NULL */
  const char *name;
  /* attributes, by kind (see OP_LIST) */
  int axis, axis2;
  bool keepdims;
  int64_t begin, end;
  double value;
  int64_t draw_hi; /* INPUT (i32): synthetic data draws in [0, draw_hi) (0: in [0, 2)); value is
                      the bound of every element (a token file is checked against it), or 0 */
  bool ta, tb;
  InitKind init;
  double init_a, init_b;
  DType param_type; /* PARAM: its declared type (f32, bf16 or f16), kept when precision.c
                       lowers a half param to f32 (the job's JobParam.type) */
  int recompute;  /* inside @recompute: its region (one per run of an annotated statement, so one
                     per loop iteration), 0: none */
  bool causal;    /* SDPA, SDPA_GRAD: query i sees keys j <= i */
  int key;        /* DROPOUT: mask key; PARAM_GRAD: the PARAM's id */
  bool step_mask; /* DROPOUT: x reads no model input (a positional embedding, a param): one
                     mask for the step, the same in every micro-batch and replica */
  int use;        /* PARAM_GRAD: index of this use of the param (0, 1, ... in use order) */
  int peer, tag;  /* SEND/RECV */
  bool stash;     /* a forward value held for the backward */
  int fwd_of;     /* backward/recompute ops: the forward op they derive from, else -1 */
  int seg;        /* index of the model body's top-level statement (loops unrolled) that
                     made this op: the unit the stage balancer moves; -1 for none */
} Op;
/* May op be made again from its inputs at no more than an elementwise pass: elementwise and
 * shape ops (not im2col or sum_to); never a product, reduction, attention or random op.
 * What remat.c remakes, and partition.c's @recompute makes once per backward pass. */
static inline bool op_cheap_to_remake(const Op *op) {
  switch (op_info[op->kind].cls) {
  case OPC_E: return true;
  case OPC_S: return op->kind != OP_IM2COL && op->kind != OP_SUM_TO;
  default: return false;
  }
}
/* The bytes of op's value: numel x dtype size. */
uint64_t op_bytes(const Op *op);
/* Ops with more than one result (SDPA, SDPA_GRAD, CE_FUSED): their results beyond the first are RESULT ops. */
static inline bool op_multi_result(OpKind k) { return k == OP_SDPA || k == OP_SDPA_GRAD || k == OP_CE_FUSED; }
/* The comparisons (eq ne lt le gt ge): a bool result. */
static inline bool op_is_compare(OpKind k) { return k >= OP_EQ && k <= OP_GE; }

/* The mesh and the training config are the job's (runtime/job.h, the contract both
 * programs link): one struct each from the program to the runtime. In a Graph the mesh
 * is normalised (every axis >= 1); CompileOptions' mesh keeps 0 for "not given". */
typedef MplMesh Mesh;

typedef struct Graph {
  Arena *arena;
  Op **ops;
  int nops, cap;
  int loss;          /* id of the scalar loss op, -1 if none */
  const char *model_name;
  Mesh mesh;
  TrainConfig train;
  int nstages;       /* pp * virtual_stages */
  const char *stages_from; /* what sets nstages, for errors: "pp = 3", "--mesh pp=4 on the command line" */
  Loc stages_loc;    /* where: the mesh's pp (or the train block's schedule); line 0 for the command line */
  bool auto_stages;  /* no @stage in the program: the balancer places ops */
  /* What the passes' times come from (cost.c): the devices' relative speeds, one per
   * pipeline rank (--device-speed; NULL: all 1), and the measured costs of a profile
   * (--profile; NULL: every cost modelled). */
  const double *rank_speed;
  const struct Measured *measured;
  /* The forward ops' identities (profile.c, prof_identify): key and label of op id i < nop_keys,
   * NULL for an op that has none (leaves, constants). */
  int nop_keys;
  const char **op_key, **op_label;
} Graph;

/* The pipeline rank of a stage under the graph's schedule (mpl_stage_rank, runtime/job.h). */
static inline int graph_stage_rank(const Graph *g, int stage) {
  return mpl_stage_rank(g->train.schedule, g->mesh.pp, stage);
}

Graph *graph_new(Arena *a);
/* Appends an op with the given inputs; fills id, sets stage -1, layout replicated,
 * fwd_of -1. Shape and dtype are the caller's. */
Op *graph_add(Graph *g, OpKind k, int nin, const int *in, Loc loc);
/* Does value v depend on a model input (an INPUT op among what it reads, transitively)? */
bool graph_reads_input(const Graph *g, int v);
bool *graph_live_from_loss(const Graph *g);
/* Appends a copy of src (another graph's op, or this one's) reading in[0 .. src->nin): every
 * attribute src has, a new id. Ids in attributes (PARAM_GRAD's key, fwd_of) are the caller's
 * to map. */
Op *graph_copy(Graph *g, const Op *src, const int *in);
const char *op_name(OpKind k);
/* --emit=graph: one op per line:
 *   %id = op(%in, ...) attrs : dtype[shape] @stage sharding  # file:line:col   */
void graph_dump(FILE *out, const Graph *g);
/* Checks the invariants above; dies with a message on a violation (internal bug). */
void graph_verify(const Graph *g);
/* Where an error about op points: the user's call when a stdlib def made op (op->site). */
Loc op_user_loc(const Op *op);
/* The note after an error moved to a user's call: "the error is in this line of nn.linear". */
void note_inside(Diag *d, Loc loc, const char *inside);
/* The RESULT op holding result `index` (>= 1) of multi-result op `op`, or -1. */
int graph_result(const Graph *g, int op, int index);
/* The params in the job's order: by global name (unique). */
int graph_params(const Graph *g, Op ***out, Arena *a);

/* ==== shard.c: tensor parallelism ======================================= */

/* When tp > 1: the forward graph of one tp rank, with local shapes and collectives. */
Graph *shard_program(Diag *d, Graph *g, bool allow_gather);

/* ==== cost.c: the cost model ============================================ */

typedef struct OpCost {
  double flops, bytes;
} OpCost;
OpCost cost_op(const Graph *g, const Op *op);
/* Seconds for a cost on the modelled CPU (peak GFLOP/s and GB/s). */
double cost_time(OpCost c);

/* Measured costs, from a profile that mplrun --profile wrote (compiler/profile.c): per op
 * id of the forward graph, seconds per micro-batch on a device of speed 1 of the op's
 * forward, and of the input- and weight-gradient ops derived from it; negative where the
 * profile has nothing for the op. */
typedef struct Measured {
  const char *path;           /* the profile file */
  int nops;                   /* the arrays' length: the graph's ops (indexed by the forward ops' ids; -1
                                 elsewhere) */
  double *fwd, *bwd_b, *bwd_w;
  double scale;               /* a modelled time x scale: the matched ops' measured sum over
                                 their modelled sum, so that modelled and measured add up */
  double kind_scale[OP__COUNT]; /* the same over the matched ops of one kind (0: none matched),
                                   which an unmatched op of that kind is scaled by instead */
  int nkeyed, nmatched;       /* ops with an identity, and those the profile had */
  bool one_pass;              /* no matched op has weight-gradient time: the profile ran a
                                 one-pass backward (partition.c, part_join_backward), so its
                                 bwd_b holds both parts */
  double setup_s, update_s;   /* per param element a rank updates, on a device of speed 1: the
                                 step's set-up (the wall time outside passes, messages and the
                                 update) and the update phase; negative: the profile has no
                                 element counts (written before they were added) or none */
  const char **unmatched;     /* labels of the first unmatched ops ("tanh at m.mpl:3:5") */
  int nunmatched_shown;
  const char *summary;        /* the profile's run, for --emit=plan */
} Measured;

/* One forward op's time, forward and backward, on a device of speed 1 (the balancer's
 * cost): measured when the profile has it, else modelled: the forward, and with
 * needs_grad (per op id: the value depends on a param) a product's gradient per operand
 * that needs one, another op's backward as 2 x its forward when an input needs one. */
double cost_fwd_bwd(const Graph *g, const Op *op, const bool *needs_grad);

/* ==== profile.c: op identities and measured costs ========================= */

/* Gives every forward op that does work (not a leaf or constant) its identity: g->op_key,
 * g->op_label (after shard.c, before the balancer; the job carries them). */
void prof_identify(Graph *g);
/* mplc --profile: reads the profile at path and matches it to g's ops by identity into
 * g->measured. A profile of another model, or one that matches none of the ops, is an
 * error; one that matches some is used for those, with a warning naming the others.
 * Returns the number of errors reported. */
int prof_load(Diag *d, Graph *g, const char *path);

/* ==== balance.c: automatic stage balancing ============================== */

/* When pp > 1 and g->auto_stages: every op with a stage gets the stage of its top-level
 * statement's group in the best split (after shard.c, before autodiff). Returns the
 * number of errors reported. */
int bal_stages(Diag *d, Graph *g, double mem_limit);

/*
 * Splits segments 0 .. nseg-1 (in order) into pp contiguous non-empty groups that
 * minimise the largest group time (its cost over the speed of its stage's device:
 * speed[k] > 0, NULL: all 1), with each group's memory (sum of mem, every mem[i] >= 0;
 * mem may be NULL) at most mem_limit (0: no limit). Writes the first segment of each
 * stage into first_seg_of_stage[0 .. pp-1]; returns 0, or -1 with a message in err[errlen].
 */
int bal_split(int nseg, const double *cost, const double *mem, int pp, const double *speed, double mem_limit,
              int *first_seg_of_stage, char *err, size_t errlen);
/* zbv's split: 2pp groups, rank r holding groups r and 2pp-1-r, minimising the largest rank
 * time (its two groups' cost over speed[r]; NULL: all 1) with each rank's memory (its two
 * groups') within mem_limit. Writes first_seg_of_stage[0 .. 2pp-1]. */
int bal_split_v(int nseg, const double *cost, const double *mem, int pp, const double *speed, double mem_limit,
                int *first_seg_of_stage, char *err, size_t errlen);

/* ==== precision.c: bf16 mixed precision ================================= */

/* Under precision = bf16 (g->train.precision), after autodiff: a new graph in which every
 * f32 operand of every matmul, forward and backward, is read through a ROUND_BF16 op and
 * every matmul's readers read its rounded result. Any other precision: g itself. */
Graph *prec_apply(Graph *g);
/* Are v's values bf16 values (a ROUND_BF16, or a reshape, transpose, expand or slice of one)? */
bool prec_exact_bf16(const Graph *g, int v);
/* Does the fused attention op (SDPA, SDPA_GRAD) round its probabilities to bf16: under
 * precision = bf16, or when q, k and v hold bf16 values (a program's own bf16 tensors)? */
bool prec_sdpa_bf16(const Graph *g, const Op *op);
/* After autodiff, before prec_apply: a program's own bf16 and f16 tensors computed in f32, each
 * op's result rounded to its type (ROUND_BF16, ROUND_F16), as PyTorch computes bf16 and f16
 * tensors (f32 arithmetic, results rounded); params stay f32 (master weights) and are read
 * rounded; their gradients are summed in f32. Without half types: g itself. */
Graph *prec_lower_half(Graph *g);
/* After the partition: the ROUND_BF16 values (precision = bf16's, or a program's own bf16
 * tensors') whose readers can all read bf16 (kernels, products and the fused attention or
 * cross-entropy whose other operands are such values too) stored as bf16 (their dtype, and
 * their views', DT_BF16), the others left f32. Returns how many values it narrowed (0 in a
 * graph without roundings). */
struct Partition;
int prec_narrow(struct Partition *p);

/* ==== remat.c: selective recomputation ================================== */

/* After precision.c, before the partition: each forward value the backward reads that
 * cheap ops (elementwise, shape) can make again from the other held values is made again
 * in the backward pass that reads it, so it is not held. Returns g, or a new graph. */
Graph *remat_apply(Graph *g);

/* ==== ce_fuse.c: the fused cross-entropy =============================== */

/* After shard.c, before the identities: each cross_entropy whose logits are a product
 * x @ w^T or x @ w read by nothing else becomes one CE_FUSED op and its RESULTs (dx1, dw1),
 * where that is exact (see the file's comment). Returns g, or a new graph. */
Graph *ce_fuse(Graph *g);

/* ==== sema.c: the front end ============================================ */

typedef struct Define {
  const char *name;
  const char *value; /* as written after '=' */
} Define;

typedef struct CompileOptions {
  const char *stdlib_dir;  /* found relative to the mplc binary */
  PtrVec include_dirs;     /* const char*, from -I */
  PtrVec defines;          /* Define*, from -D */
  bool mesh_set;           /* --mesh given */
  Mesh mesh;
  const char *schedule;    /* --schedule, or NULL */
  int64_t microbatches;    /* --microbatches, or 0 */
  double mem_limit;        /* --mem-limit bytes per rank, 0: none */
  const double *device_speed; /* --device-speed: one relative speed per pipeline rank, or NULL */
  int ndevice_speed;
  const char *profile;     /* --profile FILE.json, or NULL */
  const char *gpu_arch;    /* --gpu-arch: PTX for it in the job; NULL: none */
  bool allow_gather;       /* --allow-gather: tp may all-gather split values (shard.c) */
  const char *precision;   /* --precision: f32, tf32 or bf16 (the driver checks it), or NULL */
  bool no_fused_sdpa;      /* --no-fused-sdpa: sdpa lowered to matmuls and a softmax (sema_lower.c) */
  bool no_fused_ce;        /* --no-fused-ce: the logits stay a product and a cross_entropy (ce_fuse.c) */
  bool no_remat;           /* --no-remat: every forward value the backward reads is held (remat.c) */
  bool no_bf16_storage;    /* --no-bf16-storage: bf16 roundings kept in f32 buffers (precision.c's prec_narrow) */
} CompileOptions;

/*
 * Builds the forward graph IR of the program's model: imports, consts and -D,
 * def instantiation and param naming, shapes, dtypes, placement, mesh and train
 * block with the command-line overrides. Errors go to d; returns NULL if any.
 */
Graph *sema_program(Diag *d, Arena *a, Node *program, const CompileOptions *opt);

#endif
