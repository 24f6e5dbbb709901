/*
 * cg_llvm.c — the kernel IR as LLVM IR (through the LLVM C API), for the CPU.
 *
 * Each kernel becomes two functions: an internal NAME.body with one noalias typed
 * pointer per argument (so the vectoriser knows buffers do not overlap), and the
 * exported ABI wrapper of kernel.h:
 *   void NAME(void **args, const int64_t *scalars, int64_t begin, int64_t end)
 * which loads the pointers and calls the body (inlined by the optimiser).
 *
 * Invariants: floating-point instructions carry no fast-math flags and nothing is
 * contracted (LLVM's default: no `contract`), so the bits are those of the IR
 * instructions one by one; f32->int casts saturate (NaN -> 0) like CUDA's; math
 * functions are llvm.exp/log/sqrt/pow.f32 intrinsics and tanhf from libm. The module
 * is verified (failing with the verifier's message) before it is optimised with
 * the new pass manager's default<O3> for the host target.
 */
#include "kernel.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>

typedef struct Cg {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  const Kernel *k;
  LLVMValueRef fn;
  LLVMValueRef *val;  /* per instruction */
  LLVMValueRef *argp; /* typed buffer pointers */
  LLVMValueRef scal[3], outer;
  LLVMValueRef row, col; /* with Kernel.inner: outer / inner and outer % inner */
  int outer_id;
  LLVMTypeRef i1, i8, i32, i64, f32, vd;
} Cg;

static LLVMTypeRef ktype(Cg *c, KType t) {
  switch (t) {
  case KT_BOOL: return c->i1;
  case KT_I32: return c->i32;
  case KT_I64: return c->i64;
  case KT_F32: return c->f32;
  default: return c->vd;
  }
}

/* The in-memory element type of an argument (bool is a byte). */
static LLVMTypeRef mtype(Cg *c, DType dt) {
  KType t = kt_of_dtype(dt);
  return t == KT_BOOL ? c->i8 : ktype(c, t);
}

static LLVMValueRef intrinsic(Cg *c, const char *name, LLVMTypeRef ret, LLVMValueRef *args, int n) {
  LLVMTypeRef pt[3];
  for (int i = 0; i < n; i++) pt[i] = LLVMTypeOf(args[i]);
  LLVMTypeRef ft = LLVMFunctionType(ret, pt, (unsigned)n, 0);
  LLVMValueRef f = LLVMGetNamedFunction(c->mod, name);
  if (!f) {
    f = LLVMAddFunction(c->mod, name, ft);
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(c->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
  }
  return LLVMBuildCall2(c->b, ft, f, args, (unsigned)n, "");
}

static LLVMValueRef V(Cg *c, int id) { return c->val[id]; }

static LLVMValueRef gep(Cg *c, int arg, LLVMValueRef idx) {
  LLVMTypeRef et = mtype(c, c->k->args[arg].dtype);
  return LLVMBuildInBoundsGEP2(c->b, et, c->argp[arg], &idx, 1, "");
}

static LLVMValueRef emit_load(Cg *c, const KInstr *in) {
  DType dt = c->k->args[in->arg].dtype;
  LLVMValueRef v = LLVMBuildLoad2(c->b, mtype(c, dt), gep(c, in->arg, V(c, in->a)), "");
  LLVMSetAlignment(v, (unsigned)dtype_size(dt));
  if (kt_of_dtype(dt) == KT_BOOL) v = LLVMBuildICmp(c->b, LLVMIntNE, v, LLVMConstInt(c->i8, 0, 0), "");
  return v;
}

static void emit_store(Cg *c, const KInstr *in) {
  DType dt = c->k->args[in->arg].dtype;
  LLVMValueRef v = V(c, in->b);
  if (kt_of_dtype(dt) == KT_BOOL) v = LLVMBuildZExt(c->b, v, c->i8, "");
  LLVMValueRef s = LLVMBuildStore(c->b, v, gep(c, in->arg, V(c, in->a)));
  LLVMSetAlignment(s, (unsigned)dtype_size(dt));
}

static LLVMValueRef emit_cast(Cg *c, const KInstr *in) {
  LLVMValueRef x = V(c, in->a);
  KType from = c->k->ins[in->a].type, to = in->type;
  LLVMTypeRef tt = ktype(c, to);
  if (from == to) return x;
  if (from == KT_F32) {
    LLVMValueRef args[1] = {x};
    return intrinsic(c, to == KT_I32 ? "llvm.fptosi.sat.i32.f32" : "llvm.fptosi.sat.i64.f32", tt, args, 1);
  }
  if (to == KT_F32) return from == KT_BOOL ? LLVMBuildUIToFP(c->b, x, tt, "") : LLVMBuildSIToFP(c->b, x, tt, "");
  if (from == KT_BOOL) return LLVMBuildZExt(c->b, x, tt, "");
  if (from == KT_I32 && to == KT_I64) return LLVMBuildSExt(c->b, x, tt, "");
  if (to == KT_BOOL) return LLVMBuildICmp(c->b, LLVMIntNE, x, LLVMConstInt(ktype(c, from), 0, 0), "");
  return LLVMBuildTrunc(c->b, x, tt, "");
}

static LLVMValueRef emit_minmax(Cg *c, const KInstr *in) {
  LLVMValueRef x = V(c, in->a), y = V(c, in->b), pick;
  bool isf = in->type == KT_F32, mx = in->op == KI_MAX;
  if (isf) {
    pick = LLVMBuildFCmp(c->b, mx ? LLVMRealOGT : LLVMRealOLT, x, y, "");
    pick = LLVMBuildOr(c->b, pick, LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, ""), "");
  } else {
    pick = LLVMBuildICmp(c->b, mx ? LLVMIntSGT : LLVMIntSLT, x, y, "");
  }
  return LLVMBuildSelect(c->b, pick, x, y, "");
}

static LLVMValueRef emit_cmp(Cg *c, const KInstr *in) {
  static const LLVMRealPredicate fp[] = {[KI_EQ] = LLVMRealOEQ, [KI_NE] = LLVMRealUNE, [KI_LT] = LLVMRealOLT,
                                         [KI_LE] = LLVMRealOLE, [KI_GT] = LLVMRealOGT, [KI_GE] = LLVMRealOGE};
  static const LLVMIntPredicate ip[] = {[KI_EQ] = LLVMIntEQ, [KI_NE] = LLVMIntNE, [KI_LT] = LLVMIntSLT,
                                        [KI_LE] = LLVMIntSLE, [KI_GT] = LLVMIntSGT, [KI_GE] = LLVMIntSGE};
  static const LLVMIntPredicate up[] = {[KI_EQ] = LLVMIntEQ, [KI_NE] = LLVMIntNE, [KI_LT] = LLVMIntULT,
                                        [KI_LE] = LLVMIntULE, [KI_GT] = LLVMIntUGT, [KI_GE] = LLVMIntUGE};
  KType t = c->k->ins[in->a].type;
  if (t == KT_F32) return LLVMBuildFCmp(c->b, fp[in->op], V(c, in->a), V(c, in->b), "");
  return LLVMBuildICmp(c->b, t == KT_BOOL ? up[in->op] : ip[in->op], V(c, in->a), V(c, in->b), "");
}

static LLVMValueRef emit_unary(Cg *c, const KInstr *in) {
  LLVMValueRef x = V(c, in->a), args[1] = {x};
  LLVMTypeRef t = ktype(c, in->type);
  switch (in->op) {
  case KI_NEG: return in->type == KT_F32 ? LLVMBuildFNeg(c->b, x, "") : LLVMBuildNeg(c->b, x, "");
  case KI_NOT: return LLVMBuildNot(c->b, x, "");
  case KI_ABS:
    if (in->type == KT_F32) return intrinsic(c, "llvm.fabs.f32", t, args, 1);
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, x, LLVMConstInt(t, 0, 0), ""),
                           LLVMBuildNeg(c->b, x, ""), x, "");
  case KI_EXP: return intrinsic(c, "llvm.exp.f32", t, args, 1);
  case KI_LOG: return intrinsic(c, "llvm.log.f32", t, args, 1);
  case KI_SQRT: return intrinsic(c, "llvm.sqrt.f32", t, args, 1);
  case KI_TANH: return intrinsic(c, "tanhf", t, args, 1);
  case KI_CAST: return emit_cast(c, in);
  default: die("cg_llvm: %s is not unary", ki_name(in->op));
  }
}

/* outer / inner and outer % inner are the row loop's values. */
static LLVMValueRef row_col(Cg *c, const KInstr *in) {
  if (!c->k->inner || in->a != c->outer_id || (in->op != KI_DIV && in->op != KI_REM)) return NULL;
  const KInstr *d = &c->k->ins[in->b];
  if (d->op != KI_CONST || d->imm != c->k->inner) return NULL;
  return in->op == KI_DIV ? c->row : c->col;
}

static LLVMValueRef emit_binary(Cg *c, const KInstr *in) {
  LLVMValueRef x = V(c, in->a), y = V(c, in->b), args[2] = {x, y};
  LLVMValueRef rc = row_col(c, in);
  if (rc) return rc;
  bool isf = in->type == KT_F32;
  switch (in->op) {
  case KI_ADD: return isf ? LLVMBuildFAdd(c->b, x, y, "") : LLVMBuildAdd(c->b, x, y, "");
  case KI_SUB: return isf ? LLVMBuildFSub(c->b, x, y, "") : LLVMBuildSub(c->b, x, y, "");
  case KI_MUL: return isf ? LLVMBuildFMul(c->b, x, y, "") : LLVMBuildMul(c->b, x, y, "");
  /* i64 values divided are non-negative indices: unsigned is exact and cheaper */
  case KI_DIV:
    if (isf) return LLVMBuildFDiv(c->b, x, y, "");
    return in->type == KT_I64 ? LLVMBuildUDiv(c->b, x, y, "") : LLVMBuildSDiv(c->b, x, y, "");
  case KI_REM:
    if (isf) return LLVMBuildFRem(c->b, x, y, "");
    return in->type == KT_I64 ? LLVMBuildURem(c->b, x, y, "") : LLVMBuildSRem(c->b, x, y, "");
  case KI_POW: return intrinsic(c, "llvm.pow.f32", c->f32, args, 2);
  case KI_MAX: case KI_MIN: return emit_minmax(c, in);
  case KI_AND: return LLVMBuildAnd(c->b, x, y, "");
  case KI_OR: return LLVMBuildOr(c->b, x, y, "");
  case KI_XOR: return LLVMBuildXor(c->b, x, y, "");
  case KI_SHR: return LLVMBuildLShr(c->b, x, y, "");
  default: return emit_cmp(c, in);
  }
}

static LLVMValueRef emit_const(Cg *c, const KInstr *in) {
  if (in->type == KT_F32) return LLVMConstReal(c->f32, (double)in->fimm);
  return LLVMConstInt(ktype(c, in->type), (unsigned long long)in->imm, in->type != KT_BOOL);
}

static void emit_block(Cg *c, const KBlock *bl);

/* A loop: header with phis (index, accumulator), body, exit; the value is the final acc. */
static LLVMValueRef emit_loop(Cg *c, int id) {
  const KInstr *in = &c->k->ins[id];
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "body");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "exit");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "k"), acc = NULL;
  if (in->red != KR_NONE) acc = LLVMBuildPhi(c->b, ktype(c, in->type), "acc");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k, LLVMConstInt(c->i64, (unsigned long long)in->imm, 0), ""),
                  body, exit);
  LLVMPositionBuilderAtEnd(c->b, body);
  c->val[id] = k; /* LOOPVAR reads it while the body is built */
  emit_block(c, &in->body);
  LLVMValueRef next = NULL;
  if (in->red == KR_SUM)
    next = in->type == KT_F32 ? LLVMBuildFAdd(c->b, acc, V(c, in->b), "") : LLVMBuildAdd(c->b, acc, V(c, in->b), "");
  if (in->red == KR_MAX) {
    KInstr mx = {.op = KI_MAX, .type = in->type};
    LLVMValueRef saved = c->val[id];
    c->val[id] = acc; /* emit_minmax reads operands by id: acc as a, the yield as b */
    mx.a = id, mx.b = in->b;
    next = emit_minmax(c, &mx);
    c->val[id] = saved;
  }
  LLVMValueRef k1 = LLVMBuildAdd(c->b, k, LLVMConstInt(c->i64, 1, 0), "");
  LLVMBasicBlockRef end = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, head);
  LLVMValueRef z = LLVMConstInt(c->i64, 0, 0);
  LLVMAddIncoming(k, &z, &pre, 1);
  LLVMAddIncoming(k, &k1, &end, 1);
  if (acc) {
    LLVMValueRef init = V(c, in->a);
    LLVMAddIncoming(acc, &init, &pre, 1);
    LLVMAddIncoming(acc, &next, &end, 1);
  }
  LLVMPositionBuilderAtEnd(c->b, exit);
  return acc;
}

static void emit_instr(Cg *c, int id) {
  const KInstr *in = &c->k->ins[id];
  LLVMValueRef v = NULL;
  switch (in->op) {
  case KI_OUTER: v = c->outer, c->outer_id = id; break;
  case KI_SCALAR: v = c->scal[in->imm]; break;
  case KI_CONST: v = emit_const(c, in); break;
  case KI_LOAD: v = emit_load(c, in); break;
  case KI_STORE: emit_store(c, in); break;
  case KI_LOOP: v = emit_loop(c, id); break;
  case KI_LOOPVAR: v = c->val[in->imm]; break;
  case KI_SELECT: v = LLVMBuildSelect(c->b, V(c, in->a), V(c, in->b), V(c, in->c), ""); break;
  case KI_NEG: case KI_NOT: case KI_ABS: case KI_EXP: case KI_LOG: case KI_SQRT: case KI_TANH: case KI_CAST:
    v = emit_unary(c, in);
    break;
  default: v = emit_binary(c, in); break;
  }
  c->val[id] = v;
}

static void emit_block(Cg *c, const KBlock *bl) {
  for (int i = 0; i < bl->n; i++) emit_instr(c, bl->ins[i]);
}

static LLVMAttributeRef attr(Cg *c, const char *name) {
  return LLVMCreateEnumAttribute(c->ctx, LLVMGetEnumAttributeKindForName(name, strlen(name)), 0);
}

/* for (o = begin; o < end; o++) body */
static void emit_outer(Cg *c, LLVMValueRef begin, LLVMValueRef end) {
  LLVMBasicBlockRef entry = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "outer");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "obody");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef o = LLVMBuildPhi(c->b, c->i64, "o");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, o, end, ""), body, exit);
  LLVMPositionBuilderAtEnd(c->b, body);
  c->outer = o;
  emit_block(c, &c->k->body);
  LLVMValueRef o1 = LLVMBuildAdd(c->b, o, LLVMConstInt(c->i64, 1, 0), "");
  LLVMBasicBlockRef last = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, head);
  LLVMAddIncoming(o, &begin, &entry, 1);
  LLVMAddIncoming(o, &o1, &last, 1);
  LLVMPositionBuilderAtEnd(c->b, exit);
}

/*
 * The same iterations row by row (Kernel.inner = L): for each row r met in
 * [begin, end), columns from max(begin - rL, 0) to min(end - rL, L); the body sees
 * outer = rL + col, outer / L = r, outer % L = col.
 */
static void emit_rows(Cg *c, LLVMValueRef begin, LLVMValueRef end) {
  LLVMValueRef L = LLVMConstInt(c->i64, (unsigned long long)c->k->inner, 0);
  LLVMBasicBlockRef entry = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "rows");
  LLVMBasicBlockRef rowb = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "row");
  LLVMBasicBlockRef ihead = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "cols");
  LLVMBasicBlockRef ibody = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "col");
  LLVMBasicBlockRef latch = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "nextrow");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef o = LLVMBuildPhi(c->b, c->i64, "o");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, o, end, ""), rowb, exit);
  LLVMPositionBuilderAtEnd(c->b, rowb);
  LLVMValueRef r = LLVMBuildUDiv(c->b, o, L, "r"), base = LLVMBuildMul(c->b, r, L, "base");
  LLVMValueRef lim = LLVMBuildAdd(c->b, base, L, "");
  LLVMValueRef stop = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, lim, end, ""), lim, end, "stop");
  LLVMValueRef c0 = LLVMBuildSub(c->b, o, base, ""), n = LLVMBuildSub(c->b, stop, base, "");
  LLVMBuildBr(c->b, ihead);
  LLVMPositionBuilderAtEnd(c->b, ihead);
  LLVMValueRef col = LLVMBuildPhi(c->b, c->i64, "col");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, col, n, ""), ibody, latch);
  LLVMPositionBuilderAtEnd(c->b, ibody);
  c->row = r, c->col = col;
  c->outer = LLVMBuildAdd(c->b, base, col, "o");
  emit_block(c, &c->k->body);
  LLVMValueRef col1 = LLVMBuildAdd(c->b, col, LLVMConstInt(c->i64, 1, 0), "");
  LLVMBasicBlockRef last = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, ihead);
  LLVMAddIncoming(col, &c0, &rowb, 1);
  LLVMAddIncoming(col, &col1, &last, 1);
  LLVMPositionBuilderAtEnd(c->b, latch);
  LLVMBuildBr(c->b, head);
  LLVMAddIncoming(o, &begin, &entry, 1);
  LLVMAddIncoming(o, &stop, &latch, 1);
  LLVMPositionBuilderAtEnd(c->b, exit);
}

/* NAME.body(T0 *noalias a0, ..., i64 seed, i64 step, i64 mb, i64 begin, i64 end). */
static LLVMValueRef emit_body_fn(Cg *c, const Kernel *k) {
  int n = k->nargs;
  LLVMTypeRef *pt = malloc(sizeof(LLVMTypeRef) * (size_t)(n + 5));
  if (!pt) die("out of memory");
  for (int i = 0; i < n; i++) pt[i] = LLVMPointerType(mtype(c, k->args[i].dtype), 0);
  for (int i = 0; i < 5; i++) pt[n + i] = c->i64;
  char name[160];
  snprintf(name, sizeof name, "%s.body", k->name);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->vd, pt, (unsigned)(n + 5), 0));
  free(pt);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, attr(c, "alwaysinline"));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, attr(c, "nounwind"));
  for (int i = 0; i < n; i++) LLVMAddAttributeAtIndex(fn, (unsigned)i + 1, attr(c, "noalias"));
  c->fn = fn;
  c->k = k;
  c->argp = malloc(sizeof(LLVMValueRef) * (size_t)(n + 1));
  c->val = calloc((size_t)k->ninstr + 1, sizeof(LLVMValueRef));
  if (!c->argp || !c->val) die("out of memory");
  for (int i = 0; i < n; i++) c->argp[i] = LLVMGetParam(fn, (unsigned)i);
  for (int i = 0; i < 3; i++) c->scal[i] = LLVMGetParam(fn, (unsigned)(n + i));
  LLVMValueRef begin = LLVMGetParam(fn, (unsigned)(n + 3)), end = LLVMGetParam(fn, (unsigned)(n + 4));
  c->outer_id = -1;
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->ctx, fn, "entry");
  LLVMPositionBuilderAtEnd(c->b, entry);
  if (k->inner) emit_rows(c, begin, end);
  else emit_outer(c, begin, end);
  LLVMBuildRetVoid(c->b);
  free(c->argp);
  free(c->val);
  return fn;
}

/* The exported wrapper: void NAME(void **args, const int64_t *scalars, int64_t begin, int64_t end). */
static void emit_wrapper(Cg *c, const Kernel *k, LLVMValueRef body) {
  LLVMTypeRef pi8 = LLVMPointerType(c->i8, 0), pt[4] = {LLVMPointerType(pi8, 0), LLVMPointerType(c->i64, 0), c->i64, c->i64};
  LLVMValueRef fn = LLVMAddFunction(c->mod, k->name, LLVMFunctionType(c->vd, pt, 4, 0));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, attr(c, "nounwind"));
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  int n = k->nargs;
  LLVMValueRef *av = malloc(sizeof(LLVMValueRef) * (size_t)(n + 5));
  if (!av) die("out of memory");
  for (int i = 0; i < n; i++) {
    LLVMValueRef ix = LLVMConstInt(c->i64, (unsigned long long)i, 0);
    LLVMValueRef p = LLVMBuildLoad2(c->b, pi8, LLVMBuildInBoundsGEP2(c->b, pi8, LLVMGetParam(fn, 0), &ix, 1, ""), "");
    av[i] = LLVMBuildBitCast(c->b, p, LLVMPointerType(mtype(c, k->args[i].dtype), 0), "");
  }
  for (int i = 0; i < 3; i++) {
    LLVMValueRef ix = LLVMConstInt(c->i64, (unsigned long long)i, 0);
    av[n + i] = LLVMBuildLoad2(c->b, c->i64, LLVMBuildInBoundsGEP2(c->b, c->i64, LLVMGetParam(fn, 1), &ix, 1, ""), "");
  }
  av[n + 3] = LLVMGetParam(fn, 2);
  av[n + 4] = LLVMGetParam(fn, 3);
  LLVMBuildCall2(c->b, LLVMGetElementType(LLVMTypeOf(body)), body, av, (unsigned)(n + 5), "");
  LLVMBuildRetVoid(c->b);
  free(av);
}

static void cg_init(Cg *c) {
  memset(c, 0, sizeof *c);
  c->ctx = LLVMContextCreate();
  c->mod = LLVMModuleCreateWithNameInContext("mpl_kernels", c->ctx);
  c->b = LLVMCreateBuilderInContext(c->ctx);
  c->i1 = LLVMInt1TypeInContext(c->ctx);
  c->i8 = LLVMInt8TypeInContext(c->ctx);
  c->i32 = LLVMInt32TypeInContext(c->ctx);
  c->i64 = LLVMInt64TypeInContext(c->ctx);
  c->f32 = LLVMFloatTypeInContext(c->ctx);
  c->vd = LLVMVoidTypeInContext(c->ctx);
}

static void cg_done(Cg *c) {
  LLVMDisposeBuilder(c->b);
  LLVMDisposeModule(c->mod);
  LLVMContextDispose(c->ctx);
}

static void build_module(Cg *c, const KernelSet *ks) {
  for (int i = 0; i < ks->n; i++) emit_wrapper(c, ks->k[i], emit_body_fn(c, ks->k[i]));
}

static int fail(char *err, size_t errlen, const char *what, char *msg) {
  snprintf(err, errlen, "%s: %s", what, msg ? msg : "(no message)");
  if (msg) LLVMDisposeMessage(msg);
  return -1;
}

/* The host target machine (CPU name and features of this machine, O3 code generation). */
static LLVMTargetMachineRef host_machine(char *err, size_t errlen) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    fail(err, errlen, "LLVM target", msg);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  char *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures();
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, feat, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocPIC, LLVMCodeModelDefault);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  if (!tm) snprintf(err, errlen, "LLVM: cannot create a target machine for the host");
  return tm;
}

int cg_llvm_module(const KernelSet *ks, void **bc, size_t *len, char *err, size_t errlen) {
  Cg c;
  cg_init(&c);
  build_module(&c, ks);
  char *msg = NULL;
  int rc = 0;
  if (LLVMVerifyModule(c.mod, LLVMReturnStatusAction, &msg)) {
    rc = fail(err, errlen, "LLVM verifier", msg);
    cg_done(&c);
    return rc;
  }
  if (msg) LLVMDisposeMessage(msg);
  LLVMTargetMachineRef tm = host_machine(err, errlen);
  if (!tm) {
    cg_done(&c);
    return -1;
  }
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(c.mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(c.mod, td);
  LLVMDisposeTargetData(td);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
  LLVMErrorRef e = LLVMRunPasses(c.mod, "default<O3>", tm, po);
  LLVMDisposePassBuilderOptions(po);
  LLVMDisposeTargetMachine(tm);
  if (e) {
    char *m = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "LLVM passes: %s", m);
    LLVMDisposeErrorMessage(m);
    rc = -1;
  } else {
    LLVMMemoryBufferRef mb = LLVMWriteBitcodeToMemoryBuffer(c.mod);
    *len = LLVMGetBufferSize(mb);
    *bc = malloc(*len ? *len : 1);
    if (!*bc) die("out of memory");
    memcpy(*bc, LLVMGetBufferStart(mb), *len);
    LLVMDisposeMemoryBuffer(mb);
  }
  cg_done(&c);
  return rc;
}

void cg_llvm_dump_ir(FILE *out, const KernelSet *ks) {
  Cg c;
  cg_init(&c);
  build_module(&c, ks);
  char *s = LLVMPrintModuleToString(c.mod);
  fputs(s, out);
  LLVMDisposeMessage(s);
  cg_done(&c);
}
