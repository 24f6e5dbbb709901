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
 * instructions one by one; f32->int casts saturate (NaN -> 0) like CUDA's; log, sqrt,
 * pow, sin, cos and floor are llvm.* intrinsics (libm's functions: the JIT's libm list),
 * exp and tanh plain arithmetic emitted inline (em_exp, em_tanh: the same bits on one
 * lane or W lanes). cg_llvm_module.c verifies, optimises and writes the module.
 */
#include "kernel.h"

#include "cg_llvm.h"

#include <math.h>
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
  LLVMValueRef scal[KIR_SCALARS], outer;
  LLVMValueRef row, col; /* with Kernel.inner: outer / inner and outer % inner */
  int outer_id;
  LLVMTypeRef i1, i8, i16, i32, i64, f32, vd;
  /* lane-parallel emission (see emit_lanes): W outer iterations in lockstep */
  int W;
  bool *vary;          /* per instruction: differs between outer iterations */
  int64_t *stride;     /* per i64 instruction: index(lane l) = index(lane 0) + stride * l; STRIDE_UNKNOWN */
  bool vmode;          /* emitting the W-wide body */
  bool widen;          /* the instruction being emitted is varying: operands are widened */
  LLVMValueRef lane;   /* in a lane loop (scalar code inside vmode): the lane index (i32) */
  LLVMValueRef outer_s;/* the scalar outer index in a lane loop */
  LLVMValueRef outer_v;/* in vmode: the W outer indices */
} Cg;

#define STRIDE_UNKNOWN INT64_MIN

static LLVMTypeRef stype(Cg *c, KType t) {
  switch (t) {
  case KT_BOOL: return c->i1;
  case KT_I32: return c->i32;
  case KT_I64: return c->i64;
  case KT_F32: return c->f32;
  default: return c->vd;
  }
}

static bool is_vec(LLVMValueRef v) { return LLVMGetTypeKind(LLVMTypeOf(v)) == LLVMVectorTypeKind; }

/* The type of a value of kind t: W-wide while a varying instruction is emitted. */
static LLVMTypeRef ktype(Cg *c, KType t) {
  LLVMTypeRef s = stype(c, t);
  return c->widen && t != KT_VOID ? LLVMVectorType(s, (unsigned)c->W) : s;
}

/* x broadcast to W lanes (when widening and x is a scalar). */
static LLVMValueRef splat(Cg *c, LLVMValueRef x) {
  if (!c->widen || is_vec(x)) return x;
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(x), (unsigned)c->W);
  LLVMValueRef v = LLVMBuildInsertElement(c->b, LLVMGetUndef(vt), x, LLVMConstInt(c->i32, 0, 0), "");
  return LLVMBuildShuffleVector(c->b, v, LLVMGetUndef(vt), LLVMConstNull(LLVMVectorType(c->i32, (unsigned)c->W)), "");
}

/* A constant of type t (scalar or vector). */
static LLVMValueRef cf(Cg *c, LLVMTypeRef t, double x) {
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return LLVMConstReal(t, x);
  LLVMValueRef e[64], one = LLVMConstReal(LLVMGetElementType(t), x);
  unsigned n = LLVMGetVectorSize(t);
  for (unsigned i = 0; i < n; i++) e[i] = one;
  return LLVMConstVector(e, n);
}

static LLVMValueRef ci(Cg *c, LLVMTypeRef t, long long x) {
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return LLVMConstInt(t, (unsigned long long)x, 1);
  LLVMValueRef e[64], one = LLVMConstInt(LLVMGetElementType(t), (unsigned long long)x, 1);
  unsigned n = LLVMGetVectorSize(t);
  for (unsigned i = 0; i < n; i++) e[i] = one;
  return LLVMConstVector(e, n);
}

/* An overloaded intrinsic's name for type t: base.f32 or base.v16f32. */
static const char *iname(Cg *c, char *buf, size_t n, const char *base, LLVMTypeRef t) {
  bool v = LLVMGetTypeKind(t) == LLVMVectorTypeKind;
  LLVMTypeRef e = v ? LLVMGetElementType(t) : t;
  const char *en = e == c->f32 ? "f32" : e == c->i32 ? "i32" : e == c->i64 ? "i64" : e == c->i8 ? "i8" : "i1";
  if (v) snprintf(buf, n, "%s.v%u%s", base, LLVMGetVectorSize(t), en);
  else snprintf(buf, n, "%s.%s", base, en);
  return buf;
}

/* The in-memory element type of an argument (bool is a byte, bf16 the upper half of an f32). */
static LLVMTypeRef mtype(Cg *c, DType dt) {
  if (dt == DT_BF16) return c->i16;
  KType t = kt_of_dtype(dt);
  return t == KT_BOOL ? c->i8 : stype(c, t);
}

/* A loaded bf16 (scalar or vector of i16) as the f32 it is: its bits in the upper half. */
static LLVMValueRef widen_bf16(Cg *c, LLVMValueRef v) {
  bool vec = is_vec(v);
  LLVMTypeRef i32t = vec ? LLVMVectorType(c->i32, (unsigned)c->W) : c->i32;
  LLVMTypeRef f32t = vec ? LLVMVectorType(c->f32, (unsigned)c->W) : c->f32;
  v = LLVMBuildShl(c->b, LLVMBuildZExt(c->b, v, i32t, ""), ci(c, i32t, 16), "");
  return LLVMBuildBitCast(c->b, v, f32t, "");
}

/* An f32 holding a bf16 value (the kernels store only roundings) as its upper 16 bits. */
static LLVMValueRef narrow_bf16(Cg *c, LLVMValueRef v) {
  bool vec = is_vec(v);
  LLVMTypeRef i32t = vec ? LLVMVectorType(c->i32, (unsigned)c->W) : c->i32;
  LLVMTypeRef i16t = vec ? LLVMVectorType(c->i16, (unsigned)c->W) : c->i16;
  v = LLVMBuildLShr(c->b, LLVMBuildBitCast(c->b, v, i32t, ""), ci(c, i32t, 16), "");
  return LLVMBuildTrunc(c->b, v, i16t, "");
}

static LLVMValueRef intrinsic(Cg *c, const char *name, LLVMTypeRef ret, LLVMValueRef *args, int n) {
  LLVMTypeRef pt[8];
  if (n > 8) die("cg_llvm: intrinsic %s with %d arguments", name, n);
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

/* Instruction id's value as an operand: widened while a varying instruction is built;
 * one lane's scalar inside a lane loop. */
static LLVMValueRef V(Cg *c, int id) {
  if (c->lane && id == c->outer_id) return c->outer_s;
  LLVMValueRef v = c->val[id];
  if (c->lane && is_vec(v)) return LLVMBuildExtractElement(c->b, v, c->lane, "");
  return splat(c, v);
}

/* ---- exp and tanh as plain arithmetic --------------------------------------------
 * Cephes' expf and tanhf, operation by operation (no FMA): the same IEEE operations
 * on one lane or W lanes, so scalar and vector code give the same bits, and loops
 * calling them vectorise. Accuracy: within 2 ulp of the exact values. */

static LLVMTypeRef itype_like(Cg *c, LLVMTypeRef t) {
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMVectorType(c->i32, LLVMGetVectorSize(t)) : c->i32;
}

static LLVMValueRef bfmul(Cg *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFMul(c->b, x, y, ""); }
static LLVMValueRef bfadd(Cg *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFAdd(c->b, x, y, ""); }
static LLVMValueRef bfsub(Cg *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFSub(c->b, x, y, ""); }

/* 2^n for n in [-126, 127] (i32 scalar or vector) as f32. */
static LLVMValueRef pow2i(Cg *c, LLVMValueRef n, LLVMTypeRef ft) {
  LLVMTypeRef it = LLVMTypeOf(n);
  LLVMValueRef e = LLVMBuildShl(c->b, LLVMBuildAdd(c->b, n, ci(c, it, 127), ""), ci(c, it, 23), "");
  return LLVMBuildBitCast(c->b, e, ft, "");
}

static LLVMValueRef em_exp(Cg *c, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x), it = itype_like(c, t);
  const double HI = 88.72283935546875, LO = -103.97207641601562;
  LLVMValueRef hi = LLVMBuildFCmp(c->b, LLVMRealOGT, x, cf(c, t, HI), "");
  LLVMValueRef lo = LLVMBuildFCmp(c->b, LLVMRealOLT, x, cf(c, t, LO), "");
  LLVMValueRef nan = LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, "");
  LLVMValueRef xc = LLVMBuildSelect(c->b, hi, cf(c, t, HI), x, "");
  xc = LLVMBuildSelect(c->b, lo, cf(c, t, LO), xc, "");
  xc = LLVMBuildSelect(c->b, nan, cf(c, t, 0.0), xc, "");
  char nm[48];
  LLVMValueRef a[1] = {bfadd(c, bfmul(c, xc, cf(c, t, 1.44269504088896341)), cf(c, t, 0.5))};
  LLVMValueRef fn = intrinsic(c, iname(c, nm, sizeof nm, "llvm.floor", t), t, a, 1);
  LLVMValueRef n = LLVMBuildFPToSI(c->b, fn, it, "");
  LLVMValueRef r = bfsub(c, xc, bfmul(c, fn, cf(c, t, 0.693359375)));
  r = bfsub(c, r, bfmul(c, fn, cf(c, t, -2.12194440e-4)));
  LLVMValueRef z = bfmul(c, r, r);
  static const double P[] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2, 1.6666665459E-1,
                             5.0000001201E-1};
  LLVMValueRef p = cf(c, t, P[0]);
  for (int i = 1; i < 6; i++) p = bfadd(c, bfmul(c, p, r), cf(c, t, P[i]));
  p = bfadd(c, bfadd(c, bfmul(c, p, z), r), cf(c, t, 1.0));
  LLVMValueRef n1 = LLVMBuildAShr(c->b, n, ci(c, it, 1), ""), n2 = LLVMBuildSub(c->b, n, n1, "");
  LLVMValueRef y = bfmul(c, bfmul(c, p, pow2i(c, n1, t)), pow2i(c, n2, t));
  y = LLVMBuildSelect(c->b, hi, cf(c, t, INFINITY), y, "");
  y = LLVMBuildSelect(c->b, lo, cf(c, t, 0.0), y, "");
  return LLVMBuildSelect(c->b, nan, x, y, "");
}

static LLVMValueRef em_tanh(Cg *c, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  char nm[48];
  LLVMValueRef a[1] = {x};
  LLVMValueRef z = intrinsic(c, iname(c, nm, sizeof nm, "llvm.fabs", t), t, a, 1);
  LLVMValueRef zc = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, z, cf(c, t, 44.0), ""), cf(c, t, 44.0), z, "");
  LLVMValueRef s = em_exp(c, bfadd(c, zc, zc));
  LLVMValueRef big = bfsub(c, cf(c, t, 1.0), LLVMBuildFDiv(c->b, cf(c, t, 2.0), bfadd(c, s, cf(c, t, 1.0)), ""));
  big = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOLT, x, cf(c, t, 0.0), ""), LLVMBuildFNeg(c->b, big, ""), big, "");
  LLVMValueRef x2 = bfmul(c, x, x);
  static const double P[] = {-5.70498872745E-3, 2.06390887954E-2, -5.37397155531E-2, 1.33314422036E-1,
                             -3.33332819422E-1};
  LLVMValueRef p = cf(c, t, P[0]);
  for (int i = 1; i < 5; i++) p = bfadd(c, bfmul(c, p, x2), cf(c, t, P[i]));
  LLVMValueRef small = bfadd(c, bfmul(c, bfmul(c, p, x2), x), x);
  /* tanh(-0) is -0 (libm, CUDA's tanhf, PyTorch): the sum above gives +0 */
  small = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOEQ, x, cf(c, t, 0.0), ""), x, small, "");
  return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, z, cf(c, t, 0.625), ""), big, small, "");
}

/* &arg[idx]; with W indices, W pointers into arg. */
static LLVMValueRef gep(Cg *c, int arg, LLVMValueRef idx) {
  LLVMTypeRef et = mtype(c, c->k->args[arg].dtype);
  return LLVMBuildInBoundsGEP2(c->b, et, c->argp[arg], &idx, 1, "");
}

/* W lanes of arg[idx] (idx: W indices): one vector access when consecutive, else a
 * gather (load) or scatter (store, lanes in order). */
static const char *ptrvec_name(Cg *c, char *buf, size_t n, const char *base, LLVMTypeRef et) {
  const char *en = et == c->f32 ? "f32" : et == c->i32 ? "i32" : et == c->i64 ? "i64" : et == c->i16 ? "i16" : "i8";
  snprintf(buf, n, "%s.v%d%s.v%dp0%s", base, c->W, en, c->W, en);
  return buf;
}

static LLVMValueRef all_lanes(Cg *c) {
  LLVMTypeRef mt = LLVMVectorType(c->i1, (unsigned)c->W);
  return ci(c, mt, -1);
}

static LLVMValueRef lanes_ptr(Cg *c, int arg, LLVMValueRef idx) {
  LLVMTypeRef et = mtype(c, c->k->args[arg].dtype);
  LLVMValueRef p = LLVMBuildInBoundsGEP2(c->b, et, c->argp[arg], &idx, 1, "");
  return LLVMBuildBitCast(c->b, p, LLVMPointerType(LLVMVectorType(et, (unsigned)c->W), 0), "");
}

static LLVMValueRef load_lanes(Cg *c, const KInstr *in) {
  DType dt = c->k->args[in->arg].dtype;
  LLVMTypeRef et = mtype(c, dt), vt = LLVMVectorType(et, (unsigned)c->W);
  LLVMValueRef idx = c->val[in->a], v;
  if (c->stride[in->a] == 1) {
    LLVMValueRef i0 = LLVMBuildExtractElement(c->b, idx, LLVMConstInt(c->i32, 0, 0), "");
    v = LLVMBuildLoad2(c->b, vt, lanes_ptr(c, in->arg, i0), "");
    LLVMSetAlignment(v, (unsigned)dtype_size(dt));
  } else {
    char nm[80];
    LLVMValueRef ptrs = gep(c, in->arg, idx);
    LLVMValueRef args[4] = {ptrs, LLVMConstInt(c->i32, (unsigned long long)dtype_size(dt), 0), all_lanes(c),
                            LLVMGetUndef(vt)};
    v = intrinsic(c, ptrvec_name(c, nm, sizeof nm, "llvm.masked.gather", et), vt, args, 4);
  }
  if (kt_of_dtype(dt) == KT_BOOL) v = LLVMBuildICmp(c->b, LLVMIntNE, v, LLVMConstNull(vt), "");
  if (dt == DT_BF16) v = widen_bf16(c, v);
  return v;
}

static void store_lanes(Cg *c, const KInstr *in) {
  DType dt = c->k->args[in->arg].dtype;
  LLVMTypeRef et = mtype(c, dt), vt = LLVMVectorType(et, (unsigned)c->W);
  LLVMValueRef v = V(c, in->b), idx = c->val[in->a];
  if (kt_of_dtype(dt) == KT_BOOL) v = LLVMBuildZExt(c->b, v, vt, "");
  if (dt == DT_BF16) v = narrow_bf16(c, splat(c, v));
  if (is_vec(idx) && c->stride[in->a] == 1) {
    LLVMValueRef i0 = LLVMBuildExtractElement(c->b, idx, LLVMConstInt(c->i32, 0, 0), "");
    LLVMValueRef s = LLVMBuildStore(c->b, v, lanes_ptr(c, in->arg, i0));
    LLVMSetAlignment(s, (unsigned)dtype_size(dt));
    return;
  }
  idx = splat(c, idx);
  char nm[80];
  LLVMValueRef ptrs = gep(c, in->arg, idx);
  LLVMValueRef args[4] = {v, ptrs, LLVMConstInt(c->i32, (unsigned long long)dtype_size(dt), 0), all_lanes(c)};
  intrinsic(c, ptrvec_name(c, nm, sizeof nm, "llvm.masked.scatter", et), c->vd, args, 4);
}

static LLVMValueRef emit_load(Cg *c, const KInstr *in) {
  if (c->widen) return load_lanes(c, in);
  DType dt = c->k->args[in->arg].dtype;
  LLVMValueRef v = LLVMBuildLoad2(c->b, mtype(c, dt), gep(c, in->arg, V(c, in->a)), "");
  LLVMSetAlignment(v, (unsigned)dtype_size(dt));
  if (kt_of_dtype(dt) == KT_BOOL) v = LLVMBuildICmp(c->b, LLVMIntNE, v, LLVMConstInt(c->i8, 0, 0), "");
  if (dt == DT_BF16) v = widen_bf16(c, v);
  return v;
}

static void emit_store(Cg *c, const KInstr *in) {
  if (c->widen) {
    store_lanes(c, in);
    return;
  }
  DType dt = c->k->args[in->arg].dtype;
  LLVMValueRef v = V(c, in->b);
  if (kt_of_dtype(dt) == KT_BOOL) v = LLVMBuildZExt(c->b, v, c->i8, "");
  if (dt == DT_BF16) v = narrow_bf16(c, v);
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
    char nm[64];
    if (c->widen) snprintf(nm, sizeof nm, "llvm.fptosi.sat.v%d%s.v%df32", c->W, to == KT_I32 ? "i32" : "i64", c->W);
    else snprintf(nm, sizeof nm, "llvm.fptosi.sat.%s.f32", to == KT_I32 ? "i32" : "i64");
    return intrinsic(c, nm, tt, args, 1);
  }
  if (to == KT_F32) return from == KT_BOOL ? LLVMBuildUIToFP(c->b, x, tt, "") : LLVMBuildSIToFP(c->b, x, tt, "");
  if (from == KT_BOOL) return LLVMBuildZExt(c->b, x, tt, "");
  if (from == KT_I32 && to == KT_I64) return LLVMBuildSExt(c->b, x, tt, "");
  if (to == KT_BOOL) return LLVMBuildICmp(c->b, LLVMIntNE, x, LLVMConstNull(ktype(c, from)), "");
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
  char nm[48];
  switch (in->op) {
  case KI_NEG: return in->type == KT_F32 ? LLVMBuildFNeg(c->b, x, "") : LLVMBuildNeg(c->b, x, "");
  case KI_NOT: return LLVMBuildNot(c->b, x, "");
  case KI_ABS:
    if (in->type == KT_F32) return intrinsic(c, iname(c, nm, sizeof nm, "llvm.fabs", t), t, args, 1);
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, x, LLVMConstNull(t), ""),
                           LLVMBuildNeg(c->b, x, ""), x, "");
  case KI_EXP: return em_exp(c, x);
  case KI_LOG: return intrinsic(c, iname(c, nm, sizeof nm, "llvm.log", t), t, args, 1);
  case KI_SQRT: return intrinsic(c, iname(c, nm, sizeof nm, "llvm.sqrt", t), t, args, 1);
  case KI_TANH: return em_tanh(c, x);
  case KI_SIN: return intrinsic(c, iname(c, nm, sizeof nm, "llvm.sin", t), t, args, 1);
  case KI_COS: return intrinsic(c, iname(c, nm, sizeof nm, "llvm.cos", t), t, args, 1);
  case KI_FLOOR: return intrinsic(c, iname(c, nm, sizeof nm, "llvm.floor", t), t, args, 1);
  case KI_CAST: return emit_cast(c, in);
  case KI_BITCAST: return LLVMBuildBitCast(c->b, x, t, "");
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
  case KI_POW: {
    char nm[48];
    return intrinsic(c, iname(c, nm, sizeof nm, "llvm.pow", ktype(c, KT_F32)), ktype(c, KT_F32), args, 2);
  }
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
/* x OP y for the reduction of loop id (operands as LLVM values). */
static LLVMValueRef red_combine(Cg *c, int id, LLVMValueRef x, LLVMValueRef y) {
  const KInstr *in = &c->k->ins[id];
  if (in->red == KR_SUM) return in->type == KT_F32 ? LLVMBuildFAdd(c->b, x, y, "") : LLVMBuildAdd(c->b, x, y, "");
  KInstr mx = {.op = KI_MAX, .type = in->type, .a = id, .b = in->b};
  LLVMValueRef sa = c->val[id], sb = c->val[in->b];
  c->val[id] = x, c->val[in->b] = y; /* emit_minmax reads its operands by id */
  LLVMValueRef r = emit_minmax(c, &mx);
  c->val[id] = sa, c->val[in->b] = sb;
  return r;
}

/* An array of n values of type at in the entry block. */
static LLVMValueRef entry_array(Cg *c, LLVMTypeRef at, unsigned n, const char *name) {
  LLVMBuilderRef eb = LLVMCreateBuilderInContext(c->ctx);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(c->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first) LLVMPositionBuilderBefore(eb, first);
  else LLVMPositionBuilderAtEnd(eb, entry);
  LLVMValueRef a = LLVMBuildAlloca(eb, LLVMArrayType(at, n), name);
  LLVMDisposeBuilder(eb);
  return a;
}

static LLVMValueRef array_slot(Cg *c, LLVMTypeRef at, unsigned n, LLVMValueRef a, LLVMValueRef i) {
  LLVMValueRef idx[2] = {LLVMConstInt(c->i64, 0, 0), i};
  return LLVMBuildInBoundsGEP2(c->b, LLVMArrayType(at, n), a, idx, 2, "");
}

static LLVMValueRef i64c(Cg *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }

/* The 32 lanes' partials combined pairwise, p[l] = p[l] OP p[l + s] for s = 16 .. 1: p[0]. */
static LLVMValueRef lane_tree(Cg *c, int id, LLVMTypeRef at, LLVMValueRef parts) {
  for (int st = KIR_LANES / 2; st > 0; st /= 2)
    for (int l = 0; l < st; l++) {
      LLVMValueRef pl = array_slot(c, at, KIR_LANES, parts, i64c(c, l));
      LLVMValueRef ps = array_slot(c, at, KIR_LANES, parts, i64c(c, l + st));
      LLVMBuildStore(c->b, red_combine(c, id, LLVMBuildLoad2(c->b, at, pl, ""), LLVMBuildLoad2(c->b, at, ps, "")), pl);
    }
  return LLVMBuildLoad2(c->b, at, array_slot(c, at, KIR_LANES, parts, i64c(c, 0)), "");
}

/*
 * A lane loop of n >= 2 * KIR_CHUNK iterations (kernel.h): m = n / KIR_CHUNK chunks (the
 * last one to n), each in the lane order (partials, tree: r_j); the r_j combined as a
 * binary counter (x = r_j; x = s[l] OP x for each trailing 1 bit l of j; s[trailing ones]
 * = x), then R from s[] over m's bits from the lowest, and acc = init OP R. The counter's
 * steps are selects over L = bits of m levels, the same for every chunk.
 */
static LLVMValueRef emit_lane_chunks(Cg *c, int id) {
  const KInstr *in = &c->k->ins[id];
  int64_t n = in->imm, m = n / KIR_CHUNK;
  unsigned L = 0;
  while ((m >> L) != 0) L++;
  LLVMTypeRef at = ktype(c, in->type);
  LLVMValueRef parts = entry_array(c, at, KIR_LANES, "parts"), stack = entry_array(c, at, L, "chunks");
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef chead = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "chunk");
  LLVMBasicBlockRef cbody = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "chunk_body");
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "body");
  LLVMBasicBlockRef cend = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "chunk_end");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "chunks_done");
  LLVMBuildBr(c->b, chead);
  LLVMPositionBuilderAtEnd(c->b, chead);
  LLVMValueRef j = LLVMBuildPhi(c->b, c->i64, "j");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, j, i64c(c, m), ""), cbody, done);
  LLVMPositionBuilderAtEnd(c->b, cbody);
  LLVMValueRef kb = LLVMBuildMul(c->b, j, i64c(c, KIR_CHUNK), "");
  LLVMValueRef last = LLVMBuildICmp(c->b, LLVMIntEQ, j, i64c(c, m - 1), "");
  LLVMValueRef ke = LLVMBuildSelect(c->b, last, i64c(c, n), LLVMBuildAdd(c->b, kb, i64c(c, KIR_CHUNK), ""), "");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "k");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k, ke, ""), body, cend);
  LLVMPositionBuilderAtEnd(c->b, body);
  c->val[id] = k; /* LOOPVAR reads it while the body is built */
  emit_block(c, &in->body);
  LLVMValueRef y = V(c, in->b); /* a chunk starts at a multiple of 32: lane k % 32 */
  LLVMValueRef slot = array_slot(c, at, KIR_LANES, parts, LLVMBuildAnd(c->b, k, i64c(c, KIR_LANES - 1), ""));
  LLVMValueRef old = LLVMBuildLoad2(c->b, at, slot, "");
  LLVMValueRef first = LLVMBuildICmp(c->b, LLVMIntSLT, LLVMBuildSub(c->b, k, kb, ""), i64c(c, KIR_LANES), "");
  LLVMBuildStore(c->b, LLVMBuildSelect(c->b, first, y, red_combine(c, id, old, y), ""), slot);
  LLVMValueRef k1 = LLVMBuildAdd(c->b, k, i64c(c, 1), "");
  LLVMBasicBlockRef end = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, head);
  LLVMAddIncoming(k, &kb, &cbody, 1);
  LLVMAddIncoming(k, &k1, &end, 1);
  LLVMPositionBuilderAtEnd(c->b, cend);
  LLVMValueRef x = lane_tree(c, id, at, parts);
  LLVMValueRef active = LLVMConstInt(c->i1, 1, 0), ones = i64c(c, 0);
  for (unsigned l = 0; l + 1 < L; l++) { /* (j < m < 2^L: at most L - 1 trailing ones) */
    LLVMValueRef bit = LLVMBuildTrunc(c->b, LLVMBuildLShr(c->b, j, i64c(c, l), ""), c->i1, "");
    active = LLVMBuildAnd(c->b, active, bit, "");
    LLVMValueRef sv = LLVMBuildLoad2(c->b, at, array_slot(c, at, L, stack, i64c(c, l)), "");
    x = LLVMBuildSelect(c->b, active, red_combine(c, id, sv, x), x, "");
    ones = LLVMBuildAdd(c->b, ones, LLVMBuildZExt(c->b, active, c->i64, ""), "");
  }
  LLVMBuildStore(c->b, x, array_slot(c, at, L, stack, ones));
  LLVMValueRef j1 = LLVMBuildAdd(c->b, j, i64c(c, 1), "");
  LLVMBasicBlockRef cend_last = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, chead);
  LLVMValueRef z = i64c(c, 0);
  LLVMAddIncoming(j, &z, &pre, 1);
  LLVMAddIncoming(j, &j1, &cend_last, 1);
  LLVMPositionBuilderAtEnd(c->b, done);
  LLVMValueRef R = NULL;
  for (unsigned l = 0; l < L; l++) {
    if (!((m >> l) & 1)) continue;
    LLVMValueRef sv = LLVMBuildLoad2(c->b, at, array_slot(c, at, L, stack, i64c(c, l)), "");
    R = R ? red_combine(c, id, sv, R) : sv;
  }
  return red_combine(c, id, V(c, in->a), R);
}

/*
 * A loop. A reduction accumulates in a phi (acc = acc OP yield), except a lane loop
 * (kernel.h): its yields go to partial p[k % 32] (the first 32 stored, the rest
 * combined), then p[l] = p[l] OP p[l + s] for s = 16 .. 1 and acc = init OP p[0]: the
 * order the GPU's warp computes (in chunks from 2 * KIR_CHUNK iterations: emit_lane_chunks).
 */
static LLVMValueRef emit_loop_plain(Cg *c, int id) {
  const KInstr *in = &c->k->ins[id];
  bool lanes = kir_lane_loop(c->k, id);
  if (lanes && in->imm >= 2 * KIR_CHUNK) return emit_lane_chunks(c, id);
  LLVMTypeRef at = lanes ? ktype(c, in->type) : NULL;
  LLVMValueRef parts = lanes ? entry_array(c, at, KIR_LANES, "parts") : NULL; /* the 32 partials */
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "body");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "exit");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "k"), acc = NULL;
  if (in->red != KR_NONE && !lanes) acc = LLVMBuildPhi(c->b, ktype(c, in->type), "acc");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k, LLVMConstInt(c->i64, (unsigned long long)in->imm, 0), ""),
                  body, exit);
  LLVMPositionBuilderAtEnd(c->b, body);
  c->val[id] = k; /* LOOPVAR reads it while the body is built */
  emit_block(c, &in->body);
  LLVMValueRef next = NULL;
  if (lanes) {
    LLVMValueRef y = V(c, in->b);
    LLVMValueRef slot = array_slot(c, at, KIR_LANES, parts, LLVMBuildAnd(c->b, k, LLVMConstInt(c->i64, KIR_LANES - 1, 0), ""));
    LLVMValueRef old = LLVMBuildLoad2(c->b, at, slot, "");
    LLVMValueRef first = LLVMBuildICmp(c->b, LLVMIntSLT, k, LLVMConstInt(c->i64, KIR_LANES, 0), "");
    LLVMBuildStore(c->b, LLVMBuildSelect(c->b, first, y, red_combine(c, id, old, y), ""), slot);
  } else if (acc) {
    next = red_combine(c, id, acc, V(c, in->b));
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
  if (!lanes) return acc;
  return red_combine(c, id, V(c, in->a), lane_tree(c, id, at, parts));
}

/* Whether a loop's body stores W lanes at non-consecutive places (a scatter per element). */
static bool scatters(Cg *c, const KBlock *bl) {
  for (int i = 0; i < bl->n; i++) {
    const KInstr *in = &c->k->ins[bl->ins[i]];
    if (in->op == KI_STORE && c->vary[bl->ins[i]] && c->stride[in->a] != 1) return true;
    if (in->op == KI_LOOP && scatters(c, &in->body)) return true;
  }
  return false;
}

/*
 * In the W-wide body, a loop without a value whose stores would scatter (a row
 * group's row-sized stores: out[o*L + k]) runs lane by lane instead: for l in [0, W),
 * the loop as scalar code for outer iteration o + l (so it vectorises along k).
 */
static LLVMValueRef emit_loop(Cg *c, int id) {
  const KInstr *in = &c->k->ins[id];
  if (!c->vmode || c->lane || in->red != KR_NONE || !scatters(c, &in->body)) return emit_loop_plain(c, id);
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "lanes");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "lane");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "lanes_done");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef l = LLVMBuildPhi(c->b, c->i32, "l");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, l, LLVMConstInt(c->i32, (unsigned long long)c->W, 0), ""),
                  body, exit);
  LLVMPositionBuilderAtEnd(c->b, body);
  c->lane = l;
  c->outer_s = LLVMBuildAdd(c->b, c->outer, LLVMBuildSExt(c->b, l, c->i64, ""), "");
  emit_loop_plain(c, id);
  c->lane = NULL;
  LLVMValueRef l1 = LLVMBuildAdd(c->b, l, LLVMConstInt(c->i32, 1, 0), "");
  LLVMBasicBlockRef end = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, head);
  LLVMValueRef z = LLVMConstInt(c->i32, 0, 0);
  LLVMAddIncoming(l, &z, &pre, 1);
  LLVMAddIncoming(l, &l1, &end, 1);
  LLVMPositionBuilderAtEnd(c->b, exit);
  return NULL;
}

static void emit_instr_at(Cg *c, int id);

static void emit_instr(Cg *c, int id) {
  bool saved = c->widen;
  c->widen = c->vmode && !c->lane && c->vary[id];
  emit_instr_at(c, id);
  c->widen = saved;
}

static void emit_instr_at(Cg *c, int id) {
  const KInstr *in = &c->k->ins[id];
  LLVMValueRef v = NULL;
  switch (in->op) {
  case KI_OUTER: v = c->widen ? c->outer_v : c->outer, c->outer_id = id; break;
  case KI_SCALAR: v = c->scal[in->imm]; break;
  case KI_CONST: v = emit_const(c, in); break;
  case KI_LOAD: v = emit_load(c, in); break;
  case KI_STORE: emit_store(c, in); break;
  case KI_LOOP: v = emit_loop(c, id); break;
  case KI_LOOPVAR: v = c->val[in->imm]; break;
  case KI_SELECT: v = LLVMBuildSelect(c->b, V(c, in->a), V(c, in->b), V(c, in->c), ""); break;
  case KI_NEG: case KI_NOT: case KI_ABS: case KI_EXP: case KI_LOG: case KI_SQRT: case KI_TANH: case KI_CAST:
  case KI_SIN: case KI_COS: case KI_FLOOR: case KI_BITCAST:
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

/* ---- which values vary between outer iterations, and how indices step ------------- */

static int64_t stride_of(Cg *c, const KInstr *in) {
  const KInstr *ins = c->k->ins;
  int64_t sa = in->a >= 0 ? c->stride[in->a] : 0, sb = in->b >= 0 ? c->stride[in->b] : 0, r;
  if (in->type != KT_I64 || sa == STRIDE_UNKNOWN || sb == STRIDE_UNKNOWN) return STRIDE_UNKNOWN;
  switch (in->op) {
  case KI_ADD: return __builtin_add_overflow(sa, sb, &r) ? STRIDE_UNKNOWN : r;
  case KI_SUB: return __builtin_sub_overflow(sa, sb, &r) ? STRIDE_UNKNOWN : r;
  case KI_MUL:
    if (sb == 0 && ins[in->b].op == KI_CONST) return __builtin_mul_overflow(sa, ins[in->b].imm, &r) ? STRIDE_UNKNOWN : r;
    if (sa == 0 && ins[in->a].op == KI_CONST) return __builtin_mul_overflow(sb, ins[in->a].imm, &r) ? STRIDE_UNKNOWN : r;
    return STRIDE_UNKNOWN;
  default: return STRIDE_UNKNOWN;
  }
}

static void analyse_block(Cg *c, const KBlock *bl) {
  for (int i = 0; i < bl->n; i++) {
    int id = bl->ins[i];
    const KInstr *in = &c->k->ins[id];
    bool v = false;
    switch (in->op) {
    case KI_OUTER: v = true; break;
    case KI_SCALAR: case KI_CONST: case KI_LOOPVAR: break;
    case KI_LOOP:
      analyse_block(c, &in->body);
      v = in->red != KR_NONE && ((in->a >= 0 && c->vary[in->a]) || (in->b >= 0 && c->vary[in->b]));
      break;
    default:
      v = (in->a >= 0 && c->vary[in->a]) || (in->b >= 0 && c->vary[in->b]) || (in->c >= 0 && c->vary[in->c]);
      break;
    }
    c->vary[id] = v;
    c->stride[id] = !v ? 0 : in->op == KI_OUTER ? 1 : stride_of(c, in);
  }
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
 * W outer iterations at a time while W remain (values that differ between iterations
 * are W-wide vectors, see emit_instr), then the rest one by one: every lane runs the
 * same IEEE operations in the same order as the scalar code, so the bits are those of
 * the one-by-one loop. Reductions over rows become W independent chains.
 */
static void emit_lanes(Cg *c, LLVMValueRef begin, LLVMValueRef end) {
  LLVMValueRef Wc = LLVMConstInt(c->i64, (unsigned long long)c->W, 0);
  LLVMBasicBlockRef entry = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "vouter");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "vbody");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "vdone");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef o = LLVMBuildPhi(c->b, c->i64, "vo");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLE, LLVMBuildAdd(c->b, o, Wc, ""), end, ""), body, exit);
  LLVMPositionBuilderAtEnd(c->b, body);
  LLVMValueRef iota[64];
  for (int i = 0; i < c->W; i++) iota[i] = LLVMConstInt(c->i64, (unsigned long long)i, 0);
  c->outer = o;
  c->widen = true;
  c->outer_v = LLVMBuildAdd(c->b, splat(c, o), LLVMConstVector(iota, (unsigned)c->W), "");
  c->widen = false;
  c->vmode = true;
  emit_block(c, &c->k->body);
  c->vmode = false;
  LLVMValueRef o1 = LLVMBuildAdd(c->b, o, Wc, "");
  LLVMBasicBlockRef last = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, head);
  LLVMAddIncoming(o, &begin, &entry, 1);
  LLVMAddIncoming(o, &o1, &last, 1);
  LLVMPositionBuilderAtEnd(c->b, exit);
  emit_outer(c, o, end);
}

/* Whether a loop in bl reads consecutive lanes (column sums, the embedding gradient) or
 * a reduction computes exp/log/tanh (softmax, cross-entropy): there the lane-parallel
 * form pays. Row sums of plain loads would gather W rows per element and run faster
 * one by one. */
static bool lanes_pay(Cg *c, const KBlock *bl, bool in_loop, bool in_red) {
  for (int i = 0; i < bl->n; i++) {
    int id = bl->ins[i];
    const KInstr *in = &c->k->ins[id];
    if (in->op == KI_LOOP && lanes_pay(c, &in->body, true, in_red || (in->red != KR_NONE && c->vary[id])))
      return true;
    if (!in_loop || !c->vary[id]) continue;
    if (in->op == KI_LOAD && c->stride[in->a] == 1) return true;
    if (in_red && (in->op == KI_EXP || in->op == KI_LOG || in->op == KI_TANH || in->op == KI_POW)) return true;
  }
  return false;
}

/* Whether to emit the lane-parallel form (see emit_lanes). */
static bool use_lanes(Cg *c, const Kernel *k) {
  if (k->inner || c->W <= 1 || k->n_outer < c->W) return false;
  return lanes_pay(c, &k->body, false, false);
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

/* The vectoriser may use the host's widest vectors: LLVM's tuning for AVX-512 hosts
 * prefers 256 bits, so a GELU's loop ran 8 floats wide (pass 53: forward and backward
 * 0.72x the time at 16, the same bits: lanes never reorder a sum here). A host without
 * AVX-512 has no wider registers, and the attribute changes nothing there. */
static void wide_vectors(Cg *c, LLVMValueRef fn) {
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(c->ctx, "prefer-vector-width", 19, "512", 3));
}

/* NAME.body(T0 *noalias a0, ..., i64 seed, i64 step, i64 mb, i64 begin, i64 end). */
static LLVMValueRef emit_body_fn(Cg *c, const Kernel *k) {
  int n = k->nargs;
  LLVMTypeRef *pt = malloc(sizeof(LLVMTypeRef) * (size_t)(n + KIR_SCALARS + 2));
  if (!pt) die("out of memory");
  for (int i = 0; i < n; i++) pt[i] = LLVMPointerType(mtype(c, k->args[i].dtype), 0);
  for (int i = 0; i < KIR_SCALARS + 2; i++) pt[n + i] = c->i64;
  char name[160];
  snprintf(name, sizeof name, "%s.body", k->name);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->vd, pt, (unsigned)(n + KIR_SCALARS + 2), 0));
  free(pt);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, attr(c, "alwaysinline"));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, attr(c, "nounwind"));
  wide_vectors(c, fn);
  for (int i = 0; i < n; i++) LLVMAddAttributeAtIndex(fn, (unsigned)i + 1, attr(c, "noalias"));
  c->fn = fn;
  c->k = k;
  c->argp = malloc(sizeof(LLVMValueRef) * (size_t)(n + 1));
  c->val = calloc((size_t)k->ninstr + 1, sizeof(LLVMValueRef));
  c->vary = calloc((size_t)k->ninstr + 1, sizeof(bool));
  c->stride = calloc((size_t)k->ninstr + 1, sizeof(int64_t));
  if (!c->argp || !c->val || !c->vary || !c->stride) die("out of memory");
  analyse_block(c, &k->body);
  for (int i = 0; i < n; i++) c->argp[i] = LLVMGetParam(fn, (unsigned)i);
  for (int i = 0; i < KIR_SCALARS; i++) c->scal[i] = LLVMGetParam(fn, (unsigned)(n + i));
  LLVMValueRef begin = LLVMGetParam(fn, (unsigned)(n + KIR_SCALARS)), end = LLVMGetParam(fn, (unsigned)(n + KIR_SCALARS + 1));
  c->outer_id = -1;
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->ctx, fn, "entry");
  LLVMPositionBuilderAtEnd(c->b, entry);
  if (k->inner) emit_rows(c, begin, end);
  else if (use_lanes(c, k)) emit_lanes(c, begin, end);
  else emit_outer(c, begin, end);
  LLVMBuildRetVoid(c->b);
  free(c->argp);
  free(c->val);
  free(c->vary);
  free(c->stride);
  return fn;
}

/* The exported wrapper: void NAME(void **args, const int64_t *scalars, int64_t begin, int64_t end). */
static void emit_wrapper(Cg *c, const Kernel *k, LLVMValueRef body) {
  LLVMTypeRef pi8 = LLVMPointerType(c->i8, 0), pt[4] = {LLVMPointerType(pi8, 0), LLVMPointerType(c->i64, 0), c->i64, c->i64};
  LLVMValueRef fn = LLVMAddFunction(c->mod, k->name, LLVMFunctionType(c->vd, pt, 4, 0));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, attr(c, "nounwind"));
  wide_vectors(c, fn);
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  int n = k->nargs;
  LLVMValueRef *av = malloc(sizeof(LLVMValueRef) * (size_t)(n + KIR_SCALARS + 2));
  if (!av) die("out of memory");
  for (int i = 0; i < n; i++) {
    LLVMValueRef ix = LLVMConstInt(c->i64, (unsigned long long)i, 0);
    LLVMValueRef p = LLVMBuildLoad2(c->b, pi8, LLVMBuildInBoundsGEP2(c->b, pi8, LLVMGetParam(fn, 0), &ix, 1, ""), "");
    av[i] = LLVMBuildBitCast(c->b, p, LLVMPointerType(mtype(c, k->args[i].dtype), 0), "");
  }
  for (int i = 0; i < KIR_SCALARS; i++) {
    LLVMValueRef ix = LLVMConstInt(c->i64, (unsigned long long)i, 0);
    av[n + i] = LLVMBuildLoad2(c->b, c->i64, LLVMBuildInBoundsGEP2(c->b, c->i64, LLVMGetParam(fn, 1), &ix, 1, ""), "");
  }
  av[n + KIR_SCALARS] = LLVMGetParam(fn, 2);
  av[n + KIR_SCALARS + 1] = LLVMGetParam(fn, 3);
  LLVMBuildCall2(c->b, LLVMGetElementType(LLVMTypeOf(body)), body, av, (unsigned)(n + KIR_SCALARS + 2), "");
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
  c->i16 = LLVMInt16TypeInContext(c->ctx);
  c->i32 = LLVMInt32TypeInContext(c->ctx);
  c->i64 = LLVMInt64TypeInContext(c->ctx);
  c->f32 = LLVMFloatTypeInContext(c->ctx);
  c->vd = LLVMVoidTypeInContext(c->ctx);
  c->W = 16;
  const char *w = getenv("MPL_CG_LANES"); /* debugging: 1 turns the lane-parallel form off */
  if (w && atoi(w) >= 1 && atoi(w) <= 64) c->W = atoi(w);
}

LLVMModuleRef cg_llvm_build(const KernelSet *ks, LLVMContextRef *ctx) {
  Cg c;
  cg_init(&c);
  for (int i = 0; i < ks->n; i++) emit_wrapper(&c, ks->k[i], emit_body_fn(&c, ks->k[i]));
  LLVMDisposeBuilder(c.b);
  *ctx = c.ctx;
  return c.mod;
}

