/*
 * cg_cuda.c — the kernel IR as CUDA C (--emit=cuda), and its compilation to PTX
 * with NVRTC.
 *
 * Each kernel is `extern "C" __global__ void NAME(T0 *a0, ..., long long seed,
 * long long step, long long mb, long long tpi, long long n_outer)`: one thread per outer iteration
 * in a grid-stride loop, so any launch shape computes the same values. A kernel with a
 * lane loop (kir_lane_loop) runs a warp per outer iteration instead and says so with
 * `__constant__ int NAME_lanes = 32` (the runtime launches 32 threads per iteration):
 * lane l computes the lane loop's partial p_l, xor shuffles combine the partials in the
 * IR's order and lane 0's result is broadcast; loops without a value split their
 * iterations over the lanes; block 0's stores are lane 0's, and __syncwarp() orders the
 * lanes' memory between top-level loops.
 *
 * Invariants: the arithmetic is the IR's, one C operation per IR instruction in the
 * same order (the same bits as the CPU up to libm vs CUDA math functions); NVRTC
 * runs with --fmad=false (no contraction) and IEEE division and square root; f32 ->
 * int casts use the saturating round-toward-zero intrinsics (NaN -> 0), as the CPU
 * does; i64 add/mul/shift are done on unsigned long long (wrapping, the dropout
 * hash); NVRTC's log must be empty (a warning is an error). Without MPL_HAVE_CUDA
 * the source is still produced, and compiling reports "built without CUDA".
 */
#include "kernel.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#ifdef MPL_HAVE_CUDA
#include "runtime/cuda_dl.h"
#include "runtime/mpl.h" /* the compile cache */
#endif

typedef struct Out {
  char *buf;
  size_t len;
  FILE *f;
} Out;

static const char *ctype(KType t) {
  switch (t) {
  case KT_BOOL: return "bool";
  case KT_I32: return "int";
  case KT_I64: return "long long";
  case KT_F32: return "float";
  default: return "void";
  }
}

/* The in-memory element type of an argument: bool is a byte, bf16 the upper half of an f32
 * (widened on load; stored from an f32 that holds a bf16 value, precision.c's rounding). */
static const char *mctype(DType dt) {
  if (dt == DT_BF16) return "unsigned short";
  return kt_of_dtype(dt) == KT_BOOL ? "unsigned char" : ctype(kt_of_dtype(dt));
}

/* arg[idx] = value, converted to the argument's memory type. */
static void emit_store_expr(FILE *f, const Kernel *k, const KInstr *in) {
  DType dt = k->args[in->arg].dtype;
  if (dt == DT_BF16) fprintf(f, "a%d[v%d] = (unsigned short)(__float_as_uint(v%d) >> 16);\n", in->arg, in->a, in->b);
  else fprintf(f, "a%d[v%d] = %sv%d;\n", in->arg, in->a, kt_of_dtype(dt) == KT_BOOL ? "(unsigned char)" : "", in->b);
}

static void indent(FILE *f, int n) { fprintf(f, "%*s", n, ""); }

static void float_lit(FILE *f, float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  if (x != x || x - x != 0) { /* nan, inf */
    fprintf(f, "__int_as_float(0x%08x)", bits);
    return;
  }
  char s[64];
  snprintf(s, sizeof s, "%.9g", (double)x);
  if (!strpbrk(s, ".e")) strcat(s, ".0");
  fprintf(f, "%sf", s);
}

static void emit_const(FILE *f, const KInstr *in) {
  switch (in->type) {
  case KT_F32: float_lit(f, in->fimm); break;
  case KT_BOOL: fprintf(f, "%s", in->imm ? "true" : "false"); break;
  case KT_I32: fprintf(f, "(int)%lld", (long long)in->imm); break;
  default:
    if (in->imm >= 0 && in->imm < (1ll << 31)) fprintf(f, "%lldLL", (long long)in->imm);
    else fprintf(f, "(long long)0x%llxULL", (unsigned long long)in->imm);
    break;
  }
}

static void emit_cast(FILE *f, const Kernel *k, const KInstr *in) {
  KType from = k->ins[in->a].type, to = in->type;
  if (from == KT_F32 && to == KT_I32) fprintf(f, "__float2int_rz(v%d)", in->a);
  else if (from == KT_F32 && to == KT_I64) fprintf(f, "__float2ll_rz(v%d)", in->a);
  else if (to == KT_BOOL) fprintf(f, "(v%d != 0)", in->a);
  else fprintf(f, "(%s)v%d", ctype(to), in->a);
}

/* Integer + - * and shifts wrap: computed on unsigned types. */
static void emit_wrapping(FILE *f, const KInstr *in, const char *op) {
  const char *u = in->type == KT_I64 ? "unsigned long long" : "unsigned int";
  fprintf(f, "(%s)((%s)v%d %s (%s)v%d)", ctype(in->type), u, in->a, op, u, in->b);
}

static void emit_expr(FILE *f, const Kernel *k, const KInstr *in) {
  static const char *const cmp[] = {[KI_EQ] = "==", [KI_NE] = "!=", [KI_LT] = "<",
                                    [KI_LE] = "<=", [KI_GT] = ">", [KI_GE] = ">="};
  bool isf = in->type == KT_F32, i64 = in->type == KT_I64;
  switch (in->op) {
  case KI_NEG: fprintf(f, "-v%d", in->a); break;
  case KI_NOT: fprintf(f, "!v%d", in->a); break;
  case KI_ABS: isf ? fprintf(f, "fabsf(v%d)", in->a) : fprintf(f, "(v%d < 0 ? -v%d : v%d)", in->a, in->a, in->a); break;
  case KI_EXP: fprintf(f, "expf(v%d)", in->a); break;
  case KI_LOG: fprintf(f, "logf(v%d)", in->a); break;
  case KI_SQRT: fprintf(f, "sqrtf(v%d)", in->a); break;
  case KI_TANH: fprintf(f, "tanhf(v%d)", in->a); break;
  case KI_SIN: fprintf(f, "sinf(v%d)", in->a); break;
  case KI_COS: fprintf(f, "cosf(v%d)", in->a); break;
  case KI_FLOOR: fprintf(f, "floorf(v%d)", in->a); break;
  case KI_CAST: emit_cast(f, k, in); break;
  case KI_ADD: isf ? fprintf(f, "v%d + v%d", in->a, in->b) : emit_wrapping(f, in, "+"); break;
  case KI_SUB: isf ? fprintf(f, "v%d - v%d", in->a, in->b) : emit_wrapping(f, in, "-"); break;
  case KI_MUL: isf ? fprintf(f, "v%d * v%d", in->a, in->b) : emit_wrapping(f, in, "*"); break;
  case KI_DIV: case KI_REM: {
    const char *op = in->op == KI_DIV ? "/" : "%";
    if (i64) fprintf(f, "(long long)((unsigned long long)v%d %s (unsigned long long)v%d)", in->a, op, in->b);
    else if (isf && in->op == KI_REM) fprintf(f, "fmodf(v%d, v%d)", in->a, in->b);
    else fprintf(f, "v%d %s v%d", in->a, op, in->b);
    break;
  }
  case KI_POW: fprintf(f, "powf(v%d, v%d)", in->a, in->b); break;
  case KI_MAX: case KI_MIN:
    if (isf) fprintf(f, "mpl_%sf(v%d, v%d)", in->op == KI_MAX ? "max" : "min", in->a, in->b);
    else fprintf(f, "v%d %s v%d ? v%d : v%d", in->a, in->op == KI_MAX ? ">" : "<", in->b, in->a, in->b);
    break;
  case KI_AND: fprintf(f, "v%d & v%d", in->a, in->b); break;
  case KI_OR: fprintf(f, "v%d | v%d", in->a, in->b); break;
  case KI_XOR: fprintf(f, "v%d ^ v%d", in->a, in->b); break;
  case KI_SHR: /* logical, in the operand's own width (an i32's sign not extended first): cg_llvm's LShr */
    fprintf(f, "(%s)((%s)v%d >> v%d)", ctype(in->type), in->type == KT_I32 ? "unsigned" : "unsigned long long", in->a, in->b);
    break;
  case KI_SELECT: fprintf(f, "v%d ? v%d : v%d", in->a, in->b, in->c); break;
  case KI_BITCAST: fprintf(f, "%s(v%d)", isf ? "__int_as_float" : "__float_as_int", in->a); break;
  default: fprintf(f, "v%d %s v%d", in->a, cmp[in->op], in->b); break;
  }
}

static void emit_block(FILE *f, const Kernel *k, const KBlock *bl, int ind);
static void emit_instr(FILE *f, const Kernel *k, int id, int ind);

/* a = a OP b for the reduction of loop `in`, on named values. */
static void emit_combine(FILE *f, const KInstr *in, const char *a, const char *b) {
  if (in->red == KR_SUM && in->type == KT_F32) fprintf(f, "%s = %s + %s;\n", a, a, b);
  else if (in->red == KR_SUM) fprintf(f, "%s = (%s)((unsigned long long)%s + (unsigned long long)%s);\n", a,
                                      ctype(in->type), a, b);
  else if (in->type == KT_F32) fprintf(f, "%s = mpl_maxf(%s, %s);\n", a, a, b);
  else fprintf(f, "%s = %s > %s ? %s : %s;\n", a, a, b, a, b);
}

/* Lane l's partial of iterations [b, e) (b + l, b + l + 32, ...; b a multiple of 32 or
 * NULL for 0, e - b >= 32), the xor tree, lane 0's result broadcast: p holds it on every lane. */
static void emit_lane_part(FILE *f, const Kernel *k, int id, const char *b, const char *e, int ind) {
  const KInstr *in = &k->ins[id];
  char p[32], y[32], q[32];
  snprintf(p, sizeof p, "p%d", id);
  snprintf(y, sizeof y, "v%d", in->b);
  snprintf(q, sizeof q, "q%d", id);
  char at[48]; /* the lane's first iteration */
  snprintf(at, sizeof at, "%s%slane", b ? b : "", b ? " + " : "");
  indent(f, ind);
  fprintf(f, "{\n");
  indent(f, ind + 2);
  fprintf(f, "long long k%d = %s;\n", id, at);
  emit_block(f, k, &in->body, ind + 2);
  indent(f, ind + 2);
  fprintf(f, "%s = v%d;\n", p, in->b);
  indent(f, ind);
  fprintf(f, "}\n");
  indent(f, ind);
  fprintf(f, "for (long long k%d = %s + %d; k%d < %s; k%d += %d) {\n", id, at, KIR_LANES, id, e, id, KIR_LANES);
  emit_block(f, k, &in->body, ind + 2);
  indent(f, ind + 2);
  emit_combine(f, in, p, y);
  indent(f, ind);
  fprintf(f, "}\n");
  indent(f, ind);
  fprintf(f, "for (int s = %d; s > 0; s >>= 1) {\n", KIR_LANES / 2);
  indent(f, ind + 2);
  fprintf(f, "%s %s = __shfl_xor_sync(0xffffffffu, %s, s);\n", ctype(in->type), q, p);
  indent(f, ind + 2);
  emit_combine(f, in, p, q);
  indent(f, ind);
  fprintf(f, "}\n");
  indent(f, ind);
  fprintf(f, "%s = __shfl_sync(0xffffffffu, %s, 0);\n", p, p);
}

/* x = y OP x, the operands in that order (as cg_llvm.c's red_combine(y, x)), in a block. */
static void emit_combine_left(FILE *f, const KInstr *in, int id, const char *x, const char *y, int ind) {
  char t[32];
  snprintf(t, sizeof t, "t%d", id);
  indent(f, ind);
  fprintf(f, "{\n");
  indent(f, ind + 2);
  fprintf(f, "%s %s = %s;\n", ctype(in->type), t, y);
  indent(f, ind + 2);
  emit_combine(f, in, t, x);
  indent(f, ind + 2);
  fprintf(f, "%s = %s;\n", x, t);
  indent(f, ind);
  fprintf(f, "}\n");
}

/* A lane loop in a warp kernel (see the header): the lanes' partial, then acc = init OP
 * it; from 2 * KIR_CHUNK iterations chunk by chunk, the chunks' results combined as a
 * binary counter in s (every lane the same), then over the chunk count's bits. */
static void emit_lane_loop(FILE *f, const Kernel *k, int id, int ind) {
  const KInstr *in = &k->ins[id];
  const char *T = ctype(in->type);
  int64_t n = in->imm, m = n / KIR_CHUNK;
  char p[32], e[48], acc[32], sl[32];
  snprintf(p, sizeof p, "p%d", id);
  snprintf(acc, sizeof acc, "v%d", id);
  indent(f, ind);
  fprintf(f, "%s v%d = v%d, %s;\n", T, id, in->a, p);
  if (n < 2 * KIR_CHUNK) {
    snprintf(e, sizeof e, "%lldLL", (long long)n);
    emit_lane_part(f, k, id, NULL, e, ind);
    indent(f, ind);
    emit_combine(f, in, acc, p);
    return;
  }
  int L = 0;
  while ((m >> L) != 0) L++;
  indent(f, ind);
  fprintf(f, "%s s%d[%d];\n", T, id, L);
  indent(f, ind);
  fprintf(f, "for (long long j%d = 0; j%d < %lldLL; j%d++) {\n", id, id, (long long)m, id);
  indent(f, ind + 2);
  fprintf(f, "const long long b%d = j%d * %dLL, e%d = j%d == %lldLL ? %lldLL : b%d + %dLL;\n", id, id, KIR_CHUNK, id, id,
          (long long)(m - 1), (long long)n, id, KIR_CHUNK);
  char bb[32];
  snprintf(bb, sizeof bb, "b%d", id);
  snprintf(e, sizeof e, "e%d", id);
  emit_lane_part(f, k, id, bb, e, ind + 2);
  indent(f, ind + 2);
  fprintf(f, "long long c%d = j%d;\n", id, id);
  indent(f, ind + 2);
  fprintf(f, "int l%d = 0;\n", id);
  indent(f, ind + 2);
  fprintf(f, "for (; c%d & 1; c%d >>= 1, l%d++)\n", id, id, id);
  snprintf(sl, sizeof sl, "s%d[l%d]", id, id);
  emit_combine_left(f, in, id, p, sl, ind + 4);
  indent(f, ind + 2);
  fprintf(f, "s%d[l%d] = %s;\n", id, id, p);
  indent(f, ind);
  fprintf(f, "}\n");
  bool any = false;
  for (int l = 0; l < L; l++) { /* R over m's bits from the lowest: R = s_l OP R */
    if (!((m >> l) & 1)) continue;
    snprintf(sl, sizeof sl, "s%d[%d]", id, l);
    if (any) emit_combine_left(f, in, id, p, sl, ind);
    else indent(f, ind), fprintf(f, "%s = %s;\n", p, sl);
    any = true;
  }
  indent(f, ind);
  emit_combine(f, in, acc, p);
}

static void emit_loop(FILE *f, const Kernel *k, int id, int ind) {
  const KInstr *in = &k->ins[id];
  if (in->red != KR_NONE) {
    indent(f, ind);
    fprintf(f, "%s v%d = v%d;\n", ctype(in->type), id, in->a);
  }
  indent(f, ind);
  fprintf(f, "for (long long k%d = 0; k%d < %lldLL; k%d++) {\n", id, id, (long long)in->imm, id);
  emit_block(f, k, &in->body, ind + 2);
  if (in->red != KR_NONE) {
    char acc[32], x[32];
    snprintf(acc, sizeof acc, "v%d", id);
    snprintf(x, sizeof x, "v%d", in->b);
    indent(f, ind + 2);
    emit_combine(f, in, acc, x);
  }
  indent(f, ind);
  fprintf(f, "}\n");
}

/* Marks in `loads` and `stores` the arguments the block (and its loops) loads and stores. */
static void block_args(const Kernel *k, const KBlock *b, bool *loads, bool *stores) {
  for (int i = 0; i < b->n; i++) {
    const KInstr *in = &k->ins[b->ins[i]];
    if (in->op == KI_LOAD) loads[in->arg] = true;
    if (in->op == KI_STORE) stores[in->arg] = true;
    if (in->op == KI_LOOP) block_args(k, &in->body, loads, stores);
  }
}

/* Does instruction v vary with loop `loop`'s variable or a loop nested in it (a load at
 * such an index included)? memo: 0 unknown, 1 no, 2 yes. */
static bool varies(const Kernel *k, int v, int loop, uint8_t *memo) {
  if (memo[v]) return memo[v] == 2;
  const KInstr *in = &k->ins[v];
  /* a loop variable (this loop's, or a nested one's: no other is visible), or a loop's value
     (taken as varying: its body may read k) */
  bool yes = in->op == KI_LOOPVAR || in->op == KI_LOOP;
  int ops[3] = {in->a, in->b, in->c};
  for (int j = 0; !yes && j < ki_nops_of(in->op); j++) yes = varies(k, ops[j], loop, memo);
  memo[v] = yes ? 2 : 1;
  return yes;
}

/* Is v = c * k + (what does not vary in the loop), k loop `loop`'s variable, in i64? *c. */
static bool affine(const Kernel *k, int v, int loop, uint8_t *memo, int64_t *c) {
  const KInstr *in = &k->ins[v];
  int64_t ca, cb;
  if (!varies(k, v, loop, memo)) return *c = 0, true;
  if (in->op == KI_LOOPVAR) return *c = 1, in->imm == loop;
  if (in->type != KT_I64) return false;
  if (in->op == KI_ADD || in->op == KI_SUB) {
    if (!affine(k, in->a, loop, memo, &ca) || !affine(k, in->b, loop, memo, &cb)) return false;
    return *c = in->op == KI_ADD ? ca + cb : ca - cb, true;
  }
  if (in->op != KI_MUL) return false;
  const KInstr *x = &k->ins[in->a], *y = &k->ins[in->b];
  if (x->op == KI_CONST && affine(k, in->b, loop, memo, &cb)) return *c = x->imm * cb, true;
  if (y->op == KI_CONST && affine(k, in->a, loop, memo, &ca)) return *c = y->imm * ca, true;
  return false;
}

/* Does loop `loop` touch argument a at one index instruction, c * k + d with c != 0 and d
 * the same in every iteration (k loop's variable), so that iteration k reads and writes
 * its own elements alone (x[k] += g; a column's x[k * 32 + o] += g)? */
static bool own_elements(const Kernel *k, const KBlock *b, int loop, int a, int *ix, uint8_t *memo) {
  for (int i = 0; i < b->n; i++) {
    const KInstr *in = &k->ins[b->ins[i]];
    if ((in->op == KI_LOAD || in->op == KI_STORE) && in->arg == a) {
      int64_t c;
      if (*ix >= 0 && in->a != *ix) return false;
      if (*ix < 0 && (!affine(k, in->a, loop, memo, &c) || c == 0)) return false;
      *ix = in->a;
    }
    if (in->op == KI_LOOP && !own_elements(k, &in->body, loop, a, ix, memo)) return false;
  }
  return true;
}

/* Block 0 of a warp kernel: lane loops, lane-split loops, lane 0's stores. A lane-split
 * loop's iterations run at once on the warp's lanes: none may read back what another
 * stores. Reading back its own elements is fine (x[k] += c, x[k * 32 + o] += c: a gradient
 * accumulated after a lane loop, which stopped mplc: own_elements); cumsum, topk and gather_grad, which read others, get
 * kernels of their own without lane loops, so never warp kernels (checked here). */
static void emit_warp_top(FILE *f, const Kernel *k, int id, int ind) {
  const KInstr *in = &k->ins[id];
  if (kir_lane_loop(k, id)) {
    emit_lane_loop(f, k, id, ind);
    return;
  }
  if (in->op == KI_LOOP && in->red == KR_NONE) {
    bool *loads = calloc((size_t)k->nargs + 1, 2 * sizeof(bool)), *stores = loads + k->nargs + 1;
    if (!loads) die("out of memory");
    block_args(k, &in->body, loads, stores);
    uint8_t *memo = calloc((size_t)k->ninstr, 1);
    if (!memo) die("out of memory");
    for (int a = 0, ix = -1; a < k->nargs; a++, ix = -1)
      if (loads[a] && stores[a] && !own_elements(k, &in->body, id, a, &ix, memo))
        die("cg_cuda: kernel %s: a loop split over a warp's lanes reads back argument %d it stores", k->name, a);
    free(loads);
    free(memo);
    indent(f, ind);
    fprintf(f, "for (long long k%d = lane; k%d < %lldLL; k%d += %d) {\n", id, id, (long long)in->imm, id, KIR_LANES);
    emit_block(f, k, &in->body, ind + 2);
    indent(f, ind);
    fprintf(f, "}\n");
    indent(f, ind);
    fprintf(f, "__syncwarp();\n");
    return;
  }
  if (in->op == KI_STORE) {
    indent(f, ind);
    fprintf(f, "if (lane == 0) ");
    emit_store_expr(f, k, in);
    indent(f, ind);
    fprintf(f, "__syncwarp();\n");
    return;
  }
  emit_instr(f, k, id, ind); /* values (every lane the same) and short reductions */
}

static void emit_instr(FILE *f, const Kernel *k, int id, int ind) {
  const KInstr *in = &k->ins[id];
  static const char *const scal[KIR_SCALARS] = {"seed", "step", "mb", "tpi"};
  if (in->op == KI_LOOP) {
    emit_loop(f, k, id, ind);
    return;
  }
  indent(f, ind);
  if (in->op == KI_STORE) {
    emit_store_expr(f, k, in);
    return;
  }
  fprintf(f, "%s v%d = ", ctype(in->type), id);
  switch (in->op) {
  case KI_OUTER: fprintf(f, "o"); break;
  case KI_SCALAR: fprintf(f, "%s", scal[in->imm]); break;
  case KI_CONST: emit_const(f, in); break;
  case KI_LOOPVAR: fprintf(f, "k%lld", (long long)in->imm); break;
  case KI_LOAD:
    if (in->type == KT_BOOL) fprintf(f, "(a%d[v%d] != 0)", in->arg, in->a);
    else if (k->args[in->arg].dtype == DT_BF16) fprintf(f, "__uint_as_float((unsigned)a%d[v%d] << 16)", in->arg, in->a);
    else fprintf(f, "a%d[v%d]", in->arg, in->a);
    break;
  default: emit_expr(f, k, in); break;
  }
  fprintf(f, ";\n");
}

static void emit_block(FILE *f, const Kernel *k, const KBlock *bl, int ind) {
  for (int i = 0; i < bl->n; i++) emit_instr(f, k, bl->ins[i], ind);
}

static void emit_kernel(FILE *f, const Kernel *k) {
  fprintf(f, "extern \"C\" __global__ void %s(", k->name);
  for (int i = 0; i < k->nargs; i++) {
    const KArg *a = &k->args[i];
    fprintf(f, "%s%s *__restrict__ a%d", a->mode == KA_IN ? "const " : "", mctype(a->dtype), i);
    fprintf(f, ", ");
  }
  fprintf(f, "long long seed, long long step, long long mb, long long tpi, long long n_outer) {\n");
  if (!kir_has_lane_loop(k)) {
    fprintf(f, "  for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < n_outer;\n"
               "       o += (long long)blockDim.x * gridDim.x) {\n");
    emit_block(f, k, &k->body, 4);
    fprintf(f, "  }\n}\n\n");
    return;
  }
  fprintf(f, "  const int lane = (int)(threadIdx.x & %du);\n", KIR_LANES - 1);
  fprintf(f, "  for (long long o = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / %d; o < n_outer;\n"
             "       o += (long long)blockDim.x * gridDim.x / %d) {\n", KIR_LANES, KIR_LANES);
  for (int i = 0; i < k->body.n; i++) emit_warp_top(f, k, k->body.ins[i], 4);
  fprintf(f, "  }\n}\n__constant__ int %s_lanes = %d;\n\n", k->name, KIR_LANES);
}

/* The title and helpers every source starts with: compiler/cuda/prelude.cu, embedded at build
 * time (tools/embed.sh). */
static const char prelude[] = {
#include "compiler/cuda/prelude.cu.inc"
};

char *cg_cuda_source(Arena *a, const KernelSet *ks) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) die("open_memstream failed");
  fputs(prelude, f);
  for (int i = 0; i < ks->n; i++) emit_kernel(f, ks->k[i]);
  fclose(f);
  char *s = arena_strndup(a, buf, len);
  free(buf);
  return s;
}

#ifdef MPL_HAVE_CUDA

/* NVRTC_CHECK: on failure, the error and the program's log, then return -1. */
#define NVRTC_CHECK(call, prog)                                                   \
  do {                                                                            \
    nvrtcResult rc_ = (call);                                                     \
    if (rc_ != NVRTC_SUCCESS) return nvrtc_fail(rc_, #call, prog, err, errlen);   \
  } while (0)

static int nvrtc_fail(nvrtcResult rc, const char *what, nvrtcProgram *prog, char *err, size_t errlen) {
  size_t n = 0;
  char *log = NULL;
  if (prog && mpl_nvrtc.log_size(*prog, &n) == NVRTC_SUCCESS && n > 1 && (log = malloc(n)))
    if (mpl_nvrtc.log(*prog, log) != NVRTC_SUCCESS) log[0] = 0;
  snprintf(err, errlen, "NVRTC: %s: %s%s%s", what, mpl_nvrtc.error_string(rc), log ? "\n" : "", log ? log : "");
  free(log);
  if (prog) mpl_nvrtc.destroy(prog);
  return -1;
}

/* A log with anything but white space in it (warnings included) is an error: -1 and the
 * message in err, else 0. */
static int log_error(const char *log, char *err, size_t errlen) {
  for (size_t i = 0; log[i]; i++)
    if (log[i] != ' ' && log[i] != '\n' && log[i] != '\r' && log[i] != '\t') {
      snprintf(err, errlen, "NVRTC: warnings are errors:\n%s", log);
      return -1;
    }
  return 0;
}

/* The program's log through log_error (the program destroyed when it is an error). */
static int check_log(nvrtcProgram *prog, char *err, size_t errlen) {
  size_t n = 0;
  NVRTC_CHECK(mpl_nvrtc.log_size(*prog, &n), prog);
  if (n <= 1) return 0;
  char *log = malloc(n);
  if (!log) die("out of memory");
  NVRTC_CHECK(mpl_nvrtc.log(*prog, log), prog);
  int rc = log_error(log, err, errlen);
  free(log);
  if (rc) mpl_nvrtc.destroy(prog);
  return rc;
}

/* Appends "(in kernel NAME)" for the first "mpl_kernels.cu(LINE)" of the log in err: the
 * kernel whose definition is the last to start at or before LINE. */
static void name_failing_kernel(const char *src, char *err, size_t errlen) {
  static const char def[] = "extern \"C\" __global__ void ";
  const char *at = strstr(err, "mpl_kernels.cu(");
  if (!at) return;
  long line = strtol(at + 15, NULL, 10);
  const char *p = src, *name = NULL;
  for (long l = 1; p && *p && l <= line; l++) {
    if (!strncmp(p, def, sizeof def - 1)) name = p + sizeof def - 1;
    if ((p = strchr(p, '\n'))) p++;
  }
  size_t n = strlen(err);
  if (name && n + 1 < errlen) snprintf(err + n, errlen - n, "\n(in kernel %.*s)", (int)strcspn(name, "("), name);
}

int cg_nvrtc_compile(const char *src, const char *arch, char **ptx, size_t *len, char *err, size_t errlen) {
  char archopt[64];
  if (!arch) arch = "sm_90";
  if (strncmp(arch, "sm_", 3) == 0) snprintf(archopt, sizeof archopt, "--gpu-architecture=compute_%s", arch + 3);
  else if (strncmp(arch, "compute_", 8) == 0) snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  else {
    snprintf(err, errlen, "NVRTC: unknown GPU architecture '%s' (want sm_NN)", arch);
    return -1;
  }
  if (mpl_nvrtc_load(err, errlen)) return -1;
  const char *opts[] = {archopt, "--fmad=false", "-default-device", "--prec-div=true", "--prec-sqrt=true"};
  int nopts = (int)(sizeof opts / sizeof opts[0]);
  uint8_t *entry;
  const char *clog, *cptx;
  if (mpl_nvrtc_cache_get(src, "mpl_kernels.cu", opts, nopts, &entry, &clog, &cptx, NULL)) { /* compiled before */
    int rc = log_error(clog, err, errlen);
    if (rc) {
      name_failing_kernel(src, err, errlen);
    } else {
      *len = strlen(cptx) + 1; /* (NVRTC's size counts the NUL) */
      *ptx = malloc(*len);
      if (!*ptx) die("out of memory");
      memcpy(*ptx, cptx, *len);
    }
    mpl_free(entry);
    return rc;
  }
  nvrtcProgram prog;
  NVRTC_CHECK(mpl_nvrtc.create(&prog, src, "mpl_kernels.cu", 0, NULL, NULL), NULL);
  nvrtcResult rc = mpl_nvrtc.compile(prog, nopts, opts);
  if (rc != NVRTC_SUCCESS) {
    nvrtc_fail(rc, "nvrtcCompileProgram", &prog, err, errlen);
    name_failing_kernel(src, err, errlen);
    return -1;
  }
  if (check_log(&prog, err, errlen)) {
    name_failing_kernel(src, err, errlen);
    return -1;
  }
  size_t n = 0;
  NVRTC_CHECK(mpl_nvrtc.ptx_size(prog, &n), &prog);
  *ptx = malloc(n ? n : 1);
  if (!*ptx) die("out of memory");
  NVRTC_CHECK(mpl_nvrtc.ptx(prog, *ptx), &prog);
  *len = n;
  mpl_nvrtc.destroy(&prog);
  if (n && (*ptx)[n - 1] == 0) mpl_nvrtc_cache_put(src, "mpl_kernels.cu", opts, nopts, "", *ptx);
  return 0;
}

#else

int cg_nvrtc_compile(const char *src, const char *arch, char **ptx, size_t *len, char *err, size_t errlen) {
  (void)src, (void)arch;
  *ptx = NULL;
  *len = 0;
  snprintf(err, errlen, "NVRTC: mplc was built without CUDA");
  return CG_NVRTC_UNAVAILABLE;
}

#endif
