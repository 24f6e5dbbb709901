/*
 * kernel.h — fusion (fuse.c), the kernel IR (kir.c), its two emitters
 * (cg_llvm.c: LLVM IR / bitcode for the CPU; cg_cuda.c: CUDA C through NVRTC) and the
 * code generation pass that runs both (codegen.c).
 *
 * Pipeline: an ordered list of graph ops (one stage's pass) --fuse_program-->
 * a Program (ordered Steps) plus kernels added to a KernelSet shared by the job.
 * Programs, Steps and Kernels are plain data (ints, doubles, arrays) so they can be
 * serialised into the job file.
 *
 * Kernel IR invariants (kir_verify):
 *  - a kernel body is a tree of blocks; block 0 is the body of the outer loop
 *    (o in [begin, end)); a KI_LOOP owns a nested block;
 *  - instructions are SSA: every operand is an earlier instruction that is visible
 *    (in the same block before it, or in an enclosing block before the loop that
 *    contains it);
 *  - no instruction has side effects except KI_STORE, and KI_LOAD of an argument the
 *    kernel also writes (KA_INOUT or KA_OUT), which stays where it was emitted;
 *  - floating-point operations are IEEE f32, one IR instruction per rounding, in
 *    the order PyTorch's float32 kernels use: the emitters never contract (no FMA),
 *    reassociate or use fast-math, so fusing a chain never changes its bits;
 *  - a reduction loop accumulates in a fixed order: sequentially (acc = acc OP x), except
 *    a "lane loop" (kir_lane_loop: directly in block 0, trip count >= KIR_LANES_MIN,
 *    no store in its body):
 *    there 32 lanes each take every 32nd element (p_l = x_l OP x_{l+32} OP ...), the
 *    lanes are combined pairwise (p_l = p_l OP p_{l+s} for s = 16, 8, 4, 2, 1, l < s)
 *    and acc = init OP p_0. A lane loop of n >= 2 * KIR_CHUNK iterations (8192) goes in
 *    m = n / KIR_CHUNK chunks of KIR_CHUNK (the last to n), each in that order less the
 *    init (r_j = p_0), combined pairwise as a binary counter: x = r_j, x = s_l OP x for
 *    each trailing 1 bit l of j, s_t = x (t: j's trailing ones); then R = s_l OP R over
 *    m's 1 bits from the lowest, and acc = init OP R. An element then meets about
 *    128 + log2(m) roundings, not n / 32 (a mean of 2^24 copies of 0.1 gave 0.1004).
 *    Both emitters compute exactly this order: the CPU with 32
 *    partial accumulators, the GPU with a warp per outer iteration (lane l of the warp
 *    takes p_l, shuffles combine them), so the GPU's row reductions are coalesced and
 *    32-way parallel and the bits still match the CPU's;
 *  - outputs of a kernel never alias its inputs (an INOUT argument is one buffer).
 *
 * CPU kernel ABI (cg_llvm.c, runtime/jit_cpu.c):
 *   void NAME(void **args, const int64_t *scalars, int64_t begin, int64_t end)
 *   args: buffer pointers in argument order; scalars = {seed, step, microbatch, tp
 *   index}: the microbatch is the step's over all replicas, -1 (MPL_MB_EVAL) in an
 *   evaluation pass (dropout is the identity); the tp index places a split value's part
 *   in the whole (dropout's masks); runs outer iterations [begin, end) of [0, n_outer):
 *   any split gives the same bits.
 * CUDA kernel ABI (cg_cuda.c):
 *   extern "C" __global__ void NAME(T0 *a0, ..., long long seed, long long step,
 *                                   long long mb, long long tpi, long long n_outer)
 *   one thread per outer iteration, grid-stride loop; any launch shape works.
 */
#ifndef MPL_KERNEL_H
#define MPL_KERNEL_H

#include "partition.h"

/* ==== kir.c: the kernel IR ================================================= */

/* The kernels' scalars (the ABI above): seed, step, microbatch, tp index. */
enum { KIR_SCALARS = 4 };

/* Lane loops (see the invariants above): 32 lanes, for trip counts of at least 64; in
 * chunks of KIR_CHUNK iterations from 2 * KIR_CHUNK. */
enum { KIR_LANES = 32, KIR_LANES_MIN = 64, KIR_CHUNK = KIR_LANES * 128 };

/* Scalar types of IR values. ORDER: kir.c's ktype_names. */
typedef enum KType { KT_VOID, KT_BOOL, KT_I32, KT_I64, KT_F32, KT__COUNT } KType;

/* Reduction kind of a loop. */
typedef enum KRed { KR_NONE, KR_SUM, KR_MAX } KRed;

/*
 * Instructions. X(NAME, nops): operands a, b, c (instruction ids).
 * ORDER: kir.c's name table is generated from this list.
 */
#define KI_LIST(X)                                                              \
  X(OUTER, 0)    /* i64: the outer iteration index */                          \
  X(SCALAR, 0)   /* i64: scalars[imm] (0 seed, 1 step, 2 microbatch) */        \
  X(CONST, 0)    /* imm (bool, i32, i64) or fimm (f32) */                      \
  X(LOAD, 1)     /* arg[a] (a: i64 element index) */                           \
  X(STORE, 2)    /* arg[a] = b */                                              \
  X(LOOP, 0)     /* for k in [0, imm): body; red: acc = init (a), acc = acc OP yield (b); \
                    value: the final acc (KT_VOID when red is KR_NONE) */      \
  X(LOOPVAR, 0)  /* i64: the index of loop imm (an instruction id) */          \
  X(NEG, 1) X(NOT, 1) X(ABS, 1)                                                \
  X(EXP, 1) X(LOG, 1) X(SQRT, 1) X(TANH, 1) /* f32 math (libm / CUDA) */       \
  X(SIN, 1) X(COS, 1) X(FLOOR, 1) /* f32 math (libm / CUDA) */                 \
  X(CAST, 1)     /* a converted to the instruction's type (f32->int: trunc) */ \
  X(ADD, 2) X(SUB, 2) X(MUL, 2) X(DIV, 2) X(REM, 2) /* int: wrap; i32 div/rem signed, i64 unsigned (indices) */ \
  X(POW, 2)      /* f32 powf */                                                \
  X(MAX, 2) X(MIN, 2) /* f32: NaN-propagating (a > b || a != a ? a : b) */    \
  X(AND, 2) X(OR, 2) X(XOR, 2) X(SHR, 2) /* bool / int bit ops; SHR logical */ \
  X(EQ, 2) X(NE, 2) X(LT, 2) X(LE, 2) X(GT, 2) X(GE, 2) /* -> bool; f32 NE unordered */ \
  X(SELECT, 3)   /* a ? b : c */                                              \
  X(BITCAST, 1)  /* a's bits as the instruction's type: f32 <-> i32 (bf16 rounding) */

typedef enum KiOp {
#define X(name, nops) KI_##name,
  KI_LIST(X)
#undef X
  KI__COUNT
} KiOp;

typedef struct KBlock {
  int n, cap;
  int *ins; /* instruction ids in execution order */
} KBlock;

typedef struct KInstr {
  KiOp op;
  KType type;
  int a, b, c;       /* operands (-1: none) */
  int arg;           /* LOAD/STORE: argument index */
  int64_t imm;       /* CONST (ints), SCALAR, LOOP trip count, LOOPVAR: loop id */
  float fimm;        /* CONST f32 */
  KRed red;          /* LOOP */
  KBlock body;       /* LOOP */
  /* builder state (not part of the IR's meaning) */
  int depth;         /* block depth it lives in (0: outer body) */
  int64_t ub;        /* i64 values known to lie in [0, ub); 0: unknown */
} KInstr;

typedef enum KArgMode { KA_IN, KA_OUT, KA_INOUT } KArgMode;

typedef struct KArg {
  DType dtype;
  KArgMode mode;
  int64_t numel; /* elements the kernel may touch */
} KArg;

typedef struct Kernel {
  const char *name;   /* a C identifier, unique in the KernelSet */
  int nargs;
  KArg *args;
  int64_t n_outer;
  int64_t inner;      /* 0, or a row length dividing n_outer: the CPU emitter runs the outer
                         range row by row so outer % inner and outer / inner are loop values
                         (and the row loop vectorises); the meaning is unchanged */
  int ninstr, cap;
  KInstr *ins;
  KBlock body;        /* block 0 */
} Kernel;

typedef struct KernelKey KernelKey; /* kir.c: a kernel's text, rendered once, for dedup */

typedef struct KernelSet {
  Arena *arena;
  int n, cap;
  Kernel **k;
  KernelKey *key;     /* [n] (with dedup): the text of each kernel as it was added */
  bool no_fusion;     /* every op its own kernel (for tests and debugging) */
  bool no_dedup;      /* keep structurally identical kernels apart */
} KernelSet;

KernelSet *kset_new(Arena *a);
/* Adds k unless an identical kernel (same args, body) exists; returns its index. */
int kset_add(KernelSet *ks, Kernel *k);

const char *kt_name(KType t);
const char *ki_name(KiOp op);
int ki_nops_of(KiOp op); /* its operands: a, b, c in order */
/* The register type of a dtype in kernels (in memory bool is one byte, and bf16 two: the
 * upper half of the f32 it is in registers). */
KType kt_of_dtype(DType t);
/* Is instruction id a lane loop (a reduction directly in block 0, trip count >= 64, no store inside)? */
bool kir_lane_loop(const Kernel *k, int id);
/* Has the kernel a lane loop (the GPU then runs a warp per outer iteration)? */
bool kir_has_lane_loop(const Kernel *k);
/* Checks the invariants above; dies (internal bug) on a violation. */
void kir_verify(const Kernel *k);
/* One kernel as stable text (no pointers, names from the KernelSet). */
void kir_dump_kernel(FILE *out, const Kernel *k);

/*
 * The builder (kir.c): fuse.c emits instructions through it. Pure instructions are
 * hash-consed and placed in the outermost open block where their operands are
 * visible (loop-invariant code is hoisted as it is built); index arithmetic is
 * simplified with known ranges ((x*c + y) / c == x when 0 <= y < c).
 */
typedef struct KBuilder KBuilder;
KBuilder *kb_new(Arena *a, const char *name, int64_t n_outer); /* outer range [0, n_outer) */
Kernel *kb_finish(KBuilder *b); /* frees b */
int kb_add_arg(KBuilder *b, DType dt, KArgMode mode, int64_t numel);
Kernel *kb_kernel(KBuilder *b);
int kb_depth(KBuilder *b, int id);
bool kb_visible(KBuilder *b, int id); /* usable at the insertion point */
int kb_outer(KBuilder *b);
int kb_scalar(KBuilder *b, int which);
int kb_int(KBuilder *b, KType t, int64_t v);  /* KT_I64, KT_I32, KT_BOOL constant */
int kb_f32(KBuilder *b, float v);
int kb_un(KBuilder *b, KiOp op, KType t, int x);
int kb_bin(KBuilder *b, KiOp op, KType t, int x, int y); /* t: result type */
int kb_select(KBuilder *b, int c, int x, int y);
int kb_load(KBuilder *b, int arg, int idx);
void kb_store(KBuilder *b, int arg, int idx, int val);
/* Opens a loop of n iterations placed at block depth `depth`; returns its id. */
int kb_loop_begin(KBuilder *b, int64_t n, KRed red, KType t, int init, int depth);
int kb_loopvar(KBuilder *b, int loop);
void kb_loop_end(KBuilder *b, int loop, int yield);

/* ==== fuse.c: lowering a pass to steps ===================================== */

/* The job's step kinds (runtime/job.h's JobStepKind), as the compiler names them. */
typedef enum StepKind {
  STEP_KERNEL = JS_KERNEL, /* kernel, args, n_outer */
  STEP_GEMM = JS_GEMM,     /* C[M,N] = alpha * op(A) op(B) + beta * C, row-major, batched */
  STEP_ALIAS = JS_ALIAS,   /* value a shares value b's buffer (a RESHAPE) */
  STEP_ACCUM = JS_ACCUM,   /* value a (a PARAM_GRAD op's accumulator) += value b, elementwise */
  STEP_COMM = JS_COMM,     /* op: SEND/RECV/ALLREDUCE/ALLGATHER, executed by the runtime */
  STEP_SDPA = JS_SDPA,     /* the fused attention's forward: args {q, k, v, out, lse} */
  STEP_SDPA_BWD = JS_SDPA_BWD, /* its backward: args {q, k, v, out, lse, dout, dq, dk, dv} */
  STEP_CE = JS_CE,         /* the fused cross-entropy: args {x, w, targets, loss, dx1, dw1} */
  STEP_EMB_GRAD = JS_EMB_GRAD, /* an embedding's gradient: args {idx, dy, out} */
} StepKind;

typedef struct Step {
  StepKind kind;
  int op;           /* the graph op this step comes from (KERNEL: the first of its group) */
  /* STEP_KERNEL */
  int kernel;       /* index in the KernelSet */
  int nargs;
  int *args;        /* value (op) ids in the kernel's argument order */
  int64_t n_outer;
  /* STEP_GEMM: a, b, c value ids; ALIAS: a = out, b = in; ACCUM: a = acc, b = value */
  int a, b, c;
  bool ta, tb;      /* A is stored [K, M] / B is stored [N, K] */
  int64_t m, n, k;
  int64_t batch;    /* >= 1 */
  int64_t stride_a, stride_b, stride_c; /* elements between batches (0: broadcast) */
  int64_t off_a, off_b, off_c;          /* element offset of batch 0 */
  double alpha, beta;
  uint8_t prec;     /* GEMM: a PrecKind, the job's JobStep.prec (PREC_BF16: a and b hold bf16 values);
                       SDPA: PREC_BF16 rounds the probabilities (and dS) to bf16 */
  int64_t numel;    /* ALIAS, ACCUM: elements */
  int nsrc;         /* KERNEL: the ops of its group (src), whose work it does; else 0: op alone */
  int *src;
  /* STEP_SDPA, STEP_SDPA_BWD: args (nargs) as above; batch = B (the leading axes), m = T
     queries, n = S keys, k = hs, hv, heads H, kv_heads Hkv; alpha = scale; causal */
  int64_t heads, kv_heads, hv;
  bool causal;
  /* STEP_CE: m = N positions, k = K, n = V classes, tb (w is [V, K]), chunk: rows per
     block (mpl_ce_block_rows); prec PREC_BF16: each block's logits and g rounded.
     STEP_EMB_GRAD: m positions, n columns, k rows of the table */
  int64_t chunk;
} Step;

typedef struct Program {
  int nsteps, cap;
  Step *steps;
} Program;

/*
 * Lowers ops (ordered, each after its inputs) into a Program, adding kernels to ks.
 * Inputs of those ops produced outside the list are external inputs; every value
 * consumed outside the list (or by nobody) is stored. PARAM_GRAD ops accumulate
 * into their own value id (the accumulator). A CROSS_ENTROPY gets a CE_ROWS op
 * appended to g (once; found again on later calls) as the buffer of its row losses.
 * Dies on an internal error.
 */
Program *fuse_program(Arena *a, Graph *g, const int *ops, int nops, KernelSet *ks);
/* A fused cross-entropy's step sizes (STEP_CE): m positions, k features, n classes, chunk
 * rows per block; plan.c sizes the device's scratch from them. */
void fuse_ce_sizes(const Graph *g, const Op *op, int64_t *m, int64_t *k, int64_t *n, int64_t *chunk);
/* The values step st reads or writes, in the job's argument order: a kernel's
 * arguments; a GEMM's a, b, c; an alias's or accumulation's a, b; a collective's
 * output and input. *n gets their count. */
int *step_values(Arena *a, const Graph *g, const Step *st, int *n);

/* The fusion pass: the four passes of every stage as Programs over one KernelSet. */
typedef struct Fused {
  int nstages;
  KernelSet *ks;
  Program *(*progs)[PASS__COUNT]; /* [nstages][pass] */
} Fused;
/* Lowers every pass of every stage of p (fuse_program; its temporaries are appended to
 * p->g, so whatever is sized by the number of values is sized after it). NULL after a
 * diagnostic when the graph still holds an f16 value or a bf16 one that is not a rounding
 * (a caller that skipped precision.c's prec_lower_half). */
Fused *fuse_partition(Diag *d, Arena *a, Partition *p);
/* --emit=kernels: every kernel, then each stage's non-empty programs. */
void fuse_dump(FILE *out, const Fused *fu);

/* kir.c's dumps: every kernel of ks, then the program's steps (p may be NULL); one program. */
void kir_dump(FILE *out, const KernelSet *ks, const Program *p);
void kir_dump_program(FILE *out, const KernelSet *ks, const Program *p);

/* ==== cg_llvm.c, cg_llvm_module.c: LLVM IR and bitcode for the CPU ======== */

/* One module with every kernel, verified, optimised (O3, host), as bitcode (malloc'd). */
int cg_llvm_module(const KernelSet *ks, void **bc, size_t *len, char *err, size_t errlen);
/* --emit=llvm: the module before optimisation, as text. */
void cg_llvm_dump_ir(FILE *out, const KernelSet *ks);

/* ==== cg_cuda.c: CUDA C for the GPU ========================================= */

char *cg_cuda_source(Arena *a, const KernelSet *ks);
/* NVRTC for arch ("sm_90" -> compute_90 PTX; NULL: sm_90); ptx is malloc'd. 0 on
 * success, CG_NVRTC_UNAVAILABLE in a build without CUDA, else -1 (the log in err). */
enum { CG_NVRTC_UNAVAILABLE = -2 };
int cg_nvrtc_compile(const char *src, const char *arch, char **ptx, size_t *len, char *err, size_t errlen);

/* ==== codegen.c: the kernels compiled for the job ============================ */

typedef struct KernelCode {
  void *llvm_bc;                    /* CPU: LLVM bitcode of every kernel */
  size_t llvm_bc_len;
  char *cuda_src;                   /* GPU: CUDA C of every kernel (cg_cuda_source) */
  size_t cuda_src_len;
  char *ptx;                        /* its PTX from NVRTC; NULL in a build without CUDA */
  size_t ptx_len;
} KernelCode;
/* Both emitters over ks, everything in a (PTX for gpu_arch, e.g. "sm_90"; none for NULL). 0, or 1 after
 * a diagnostic. */
int cg_kernels(Diag *d, Arena *a, const KernelSet *ks, const char *gpu_arch, KernelCode *out);

#endif
