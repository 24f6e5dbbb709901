/*
 * test_bf16.c — precision = bf16 piece by piece: the ROUND_BF16 kernel (LLVM, through the
 * JIT) against the rounding written out on the bits and against the float64 reference,
 * bit for bit, on ties, subnormals, overflow, infinities, NaNs and random bit patterns;
 * the CPU's bf16 products (oneDNN's bf16 GEMM where the CPU has avx512_bf16) against the
 * f32 product, and the fallback (MPL_CPU_BF16=0's) bit for bit; the precision pass on real
 * programs: every product reads bf16 values and its result is read only rounded, every
 * GEMM step carries the precision, and f32 leaves the graph as it was; bf16 storage
 * (prec_narrow) on real programs: what it narrows, and who may read it; the products of
 * operands stored as bf16, widened (bit for bit the f32 product) and in bf16 units; which
 * path a product takes, and MPL_CPU_BF16; the roundings' places (none of an exact value,
 * none above a folded transpose or of a bias's gradient, a leaf's in its own pass, an
 * activation's in its product's context); a program's own bf16 and f16 roundings.
 */
#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/autodiff.h"
#include "compiler/fuse_int.h" /* fuse_cat */
#include "runtime/jit_cpu.h"
#include "runtime/mpl.h"

static Arena arena;

static void setup(void) { arena_init(&arena); }
static void teardown(void) { arena_free(&arena); }

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* The rounding on the bits, as LANGUAGE.md states it: to nearest, ties to even; NaN stays
 * NaN (quiet, its sign and top bits kept). */
static uint32_t round_bits(uint32_t u) {
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return (u | 0x00400000u) & 0xFFFF0000u;
  return (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
}

/* ---- the kernel ------------------------------------------------------------------------- */

enum { NSPECIAL = 26, NRANDOM = 1 << 16 };

static const uint32_t special[NSPECIAL] = {
    0x00000000, 0x80000000, 0x3F800000, 0x3F808000 /* tie, even below */, 0x3F818000 /* tie, odd below */,
    0x3F808001, 0x3F807FFF, 0xBF818000, 0x7F7FFFFF /* -> inf */, 0x7F7F8000 /* tie at the largest -> inf */,
    0x7F7F7FFF, 0xFF7F8000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001 /* signalling NaN, low bits */,
    0xFFC00001, 0x7FFFFFFF, 0x00000001, 0x00008000 /* subnormal tie -> 0 */, 0x00018000 /* -> 0x00020000 */,
    0x007FFFFF /* -> the smallest normal */, 0x807F8000, 0x00800000, 0x4B7FFFFF, 0xC2F6E979};

/* Kernel values of ROUND_BF16 (or kind) over in[n] (f32), lowered by fusion and compiled by the JIT. */
static void run_round_kernel_of(OpKind kind, const float *in, float *out, int64_t n) {
  Graph *g = graph_new(&arena);
  Op *x = graph_add(g, OP_INPUT, 0, NULL, (Loc){0});
  x->dtype = DT_F32, x->shape = (Shape){1, {n}}, x->name = "x";
  Op *r = graph_add(g, kind, 1, &x->id, (Loc){0});
  r->dtype = DT_F32, r->shape = x->shape;
  graph_verify(g);
  KernelSet *ks = kset_new(&arena);
  Program *p = fuse_program(&arena, g, &r->id, 1, ks);
  ck_assert_int_eq(p->nsteps, 1);
  ck_assert_int_eq(p->steps[0].kind, STEP_KERNEL);
  void *bc;
  size_t len;
  char err[4096];
  ck_assert_msg(cg_llvm_module(ks, &bc, &len, err, sizeof err) == 0, "%s", err);
  MplJit *jit = mpl_jit_load(bc, len, err, sizeof err);
  free(bc);
  ck_assert_msg(jit != NULL, "%s", err);
  MplJitKernelFn fn = (MplJitKernelFn)mpl_jit_lookup(jit, ks->k[p->steps[0].kernel]->name);
  ck_assert_ptr_nonnull(fn);
  void *args[2];
  for (int j = 0; j < p->steps[0].nargs; j++) args[j] = p->steps[0].args[j] == x->id ? (void *)in : (void *)out;
  int64_t sc[KIR_SCALARS] = {0};
  fn(args, sc, 0, p->steps[0].n_outer);
  mpl_jit_free(jit);
}

static void run_round_kernel(const float *in, float *out, int64_t n) { run_round_kernel_of(OP_ROUND_BF16, in, out, n); }

/* The reference's values of `kind` over in[n]: ref_eval in float64 (malloc'd). */
static double *ref_round(OpKind kind, const float *in, int64_t n) {
  Graph *g = graph_new(&arena);
  Op *x = graph_add(g, OP_INPUT, 0, NULL, (Loc){0});
  x->dtype = DT_F32, x->shape = (Shape){1, {n}}, x->name = "x";
  Op *r = graph_add(g, kind, 1, &x->id, (Loc){0});
  r->dtype = DT_F32, r->shape = x->shape;
  double **vals = calloc(2, sizeof(double *));
  vals[0] = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) vals[0][i] = in[i];
  RefCtx ctx = {0, 0, 0};
  ref_eval(g, vals, &ctx);
  double *out = malloc(sizeof(double) * (size_t)n);
  memcpy(out, vals[1], sizeof(double) * (size_t)n);
  ref_free(g, vals);
  free(vals[0]), free(vals);
  return out;
}

START_TEST(test_round_kernel_bits) {
  int64_t n = NSPECIAL + NRANDOM;
  float *in = malloc(sizeof(float) * (size_t)n), *out = malloc(sizeof(float) * (size_t)n);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (int64_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    in[i] = float_of(i < NSPECIAL ? special[i] : (uint32_t)(s >> 32));
  }
  run_round_kernel(in, out, n);
  double *ref = ref_round(OP_ROUND_BF16, in, n);
  for (int64_t i = 0; i < n; i++) {
    uint32_t u = bits_of(in[i]), got = bits_of(out[i]), want = round_bits(u);
    ck_assert_msg(got == want, "round(0x%08x): kernel 0x%08x, want 0x%08x", u, got, want);
    ck_assert_msg(isnan(in[i]) ? isnan(ref[i]) : ref[i] == (double)out[i], "round(0x%08x): reference %.9g, kernel %.9g",
                  u, ref[i], (double)out[i]);
  }
  free(ref), free(in), free(out);
}
END_TEST

/* ---- the CPU's bf16 products -------------------------------------------------------------- */

static float *bf16_values(int64_t n, uint64_t seed) {
  float *x = malloc(sizeof(float) * (size_t)n);
  for (int64_t i = 0; i < n; i++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = float_of(round_bits(bits_of((float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0))));
  }
  return x;
}

static double max_rel(const float *a, const float *b, int64_t n) {
  double d = 0, m = 0;
  for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)b[i]));
  return d / (m > 0 ? m : 1);
}

/* Whether a product of this shape goes to the bf16 units where the CPU has them: the rule
 * gemm.c states (2MN/(M+N) >= 96, MNK >= 2^20, K under 2 * 16384), on dense operands. */
static bool units_pay(int64_t M, int64_t N, int64_t K, bool dense) {
  return dense && M * N >= 48 * (M + N) && M * N * K >= (1 << 20) && K < (1 << 15);
}

/* One product shape through the three paths: f32, bf16 forced to f32 (hw off), bf16; A's
 * rows `pad` elements longer than they need be (not dense: the f32 product, however the
 * operands are stored). */
static void check_gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t batch, bool bcast_b, int64_t pad) {
  int64_t lda = (ta ? M : K) + pad, ldb = tb ? K : N;
  int64_t sa = (ta ? K : M) * lda, sb = bcast_b ? 0 : K * N, sc = M * N;
  float *A = bf16_values(sa * batch, 1 + (uint64_t)M), *B = bf16_values(K * N * (bcast_b ? 1 : batch), 7 + (uint64_t)N);
  float *c0 = calloc((size_t)(sc * batch), sizeof(float)), *c1 = calloc((size_t)(sc * batch), sizeof(float));
  float *c2 = calloc((size_t)(sc * batch), sizeof(float));
  ck_assert_int_eq(mpl_gemm_f32_batched(ta, tb, M, N, K, 1, A, lda, sa, B, ldb, sb, 0, c0, N, sc, batch), MPL_OK);
  MplGemmBf16 off = {0}, on;
  mpl_gemm_bf16_init(&on);
  ck_assert_int_eq(mpl_gemm_bf16_batched(&off, ta, tb, M, N, K, 1, A, lda, sa, B, ldb, sb, 0, c1, N, sc, batch), MPL_OK);
  ck_assert_msg(memcmp(c0, c1, sizeof(float) * (size_t)(sc * batch)) == 0, "the fallback is not the f32 product");
  uint64_t units0 = on.units;
  ck_assert_int_eq(mpl_gemm_bf16_batched(&on, ta, tb, M, N, K, 1, A, lda, sa, B, ldb, sb, 0, c2, N, sc, batch), MPL_OK);
  uint64_t units_arrays = on.units - units0;
  /* which path (pass 104: a threshold doubled, or the density test dropped, passed); a
     batch broadcasting B over M x batch rows is one product of them all */
  int64_t rows = bcast_b && !ta ? M * batch : M, calls = bcast_b && !ta ? 1 : batch;
  ck_assert_msg(units_arrays == (on.hw && units_pay(rows, N, K, pad == 0) ? (uint64_t)calls : 0),
                "%lldx%lldx%lld x %lld: %llu products in bf16 units", (long long)M, (long long)N, (long long)K,
                (long long)batch, (unsigned long long)units_arrays);
  double e = max_rel(c2, c0, sc * batch);
  ck_assert_msg(e <= 1e-5, "%lldx%lldx%lld: bf16 units off by %.3g of the largest", (long long)M, (long long)N,
                (long long)K, e);
  printf("gemm %c%c %lld x %lld x %lld x %lld%s: %s, off by %.2g\n", ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M,
         (long long)N, (long long)K, (long long)batch, bcast_b ? " (B broadcast)" : "",
         on.units ? "bf16 units" : "f32 product", e);
  /* the operands stored as bf16 (JobStep.in16): without hw, widened, the f32 product's bits;
     with hw, what the f32 arrays gave, bit for bit, by the same path (bf16 units or not) */
  int64_t na = sa * batch, nb = K * N * (bcast_b ? 1 : batch);
  uint16_t *A16 = malloc(sizeof *A16 * (size_t)na), *B16 = malloc(sizeof *B16 * (size_t)nb);
  for (int64_t i = 0; i < na; i++) A16[i] = (uint16_t)(bits_of(A[i]) >> 16);
  for (int64_t i = 0; i < nb; i++) B16[i] = (uint16_t)(bits_of(B[i]) >> 16);
  float *c3 = calloc((size_t)(sc * batch), sizeof(float));
  ck_assert_int_eq(mpl_gemm_bf16s_batched(&off, ta, tb, M, N, K, 1, A16, lda, sa, B16, ldb, sb, 0, c3, N, sc, batch), MPL_OK);
  ck_assert_msg(memcmp(c0, c3, sizeof(float) * (size_t)(sc * batch)) == 0, "stored bf16, widened: not the f32 product");
  uint64_t units = on.units;
  memset(c3, 0, sizeof(float) * (size_t)(sc * batch));
  ck_assert_int_eq(mpl_gemm_bf16s_batched(&on, ta, tb, M, N, K, 1, A16, lda, sa, B16, ldb, sb, 0, c3, N, sc, batch), MPL_OK);
  ck_assert_msg(memcmp(c2, c3, sizeof(float) * (size_t)(sc * batch)) == 0,
                "%lldx%lldx%lld: stored bf16 differs from the same values in f32 arrays", (long long)M, (long long)N,
                (long long)K);
  ck_assert_uint_eq(on.units - units, units_arrays);
  mpl_gemm_bf16_free(&off);
  free(A16), free(B16), free(c3);
  mpl_gemm_bf16_free(&on);
  free(A), free(B), free(c0), free(c1), free(c2);
}

static void check_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t batch, bool bcast_b) {
  check_gemm_ld(ta, tb, M, N, K, batch, bcast_b, 0);
}

START_TEST(test_gemm_paths) {
  printf("avx512_bf16 and oneDNN's bf16 GEMM: %s\n", mpl_gemm_bf16_hw() ? "yes" : "no (or MPL_CPU_BF16=0)");
  check_gemm(false, false, 256, 256, 256, 1, false);
  check_gemm(true, false, 192, 320, 128, 1, false);
  check_gemm(false, true, 128, 128, 64, 3, false);
  check_gemm(true, true, 128, 96, 160, 2, true);
  check_gemm(false, false, 8, 5, 16, 2, false); /* small: the f32 product */
  /* (pass 104) A's and B's batch strides unequal (B stepped by A's passed); B broadcast with
     A not transposed (one product of M x batch rows); the rule's edge, 2MN/(M+N) = 96 and
     95.5; A's rows padded (not dense) */
  check_gemm(false, false, 256, 128, 64, 2, false);
  check_gemm(false, true, 128, 96, 160, 2, true);
  check_gemm(false, false, 96, 96, 128, 1, false);
  check_gemm(false, false, 95, 96, 128, 1, false);
  check_gemm_ld(false, false, 128, 96, 160, 2, false, 16);
  check_gemm_ld(true, true, 128, 96, 160, 1, false, 8);
}
END_TEST

/* MPL_CPU_BF16=0 turns the bf16 units off (the e2e bf16 suite compares the units with it:
 * pass 104's inverted check made that compare the units with themselves); unset, they are
 * on exactly where the CPU has avx512_bf16 and oneDNN its bf16 GEMM. */
START_TEST(test_gemm_switch) {
  __builtin_cpu_init();
  bool can = __builtin_cpu_supports("avx512bf16") && dlsym(RTLD_DEFAULT, "dnnl_gemm_bf16bf16f32") != NULL;
  unsetenv("MPL_CPU_BF16");
  ck_assert_int_eq(mpl_gemm_bf16_hw(), can);
  setenv("MPL_CPU_BF16", "0", 1);
  ck_assert(!mpl_gemm_bf16_hw());
  MplGemmBf16 w;
  mpl_gemm_bf16_init(&w);
  ck_assert(!w.hw);
  int64_t n = 256;
  float *A = bf16_values(n * n, 3), *B = bf16_values(n * n, 4), *C = calloc((size_t)(n * n), sizeof(float));
  ck_assert_int_eq(mpl_gemm_bf16_batched(&w, false, false, n, n, n, 1, A, n, 0, B, n, 0, 0, C, n, 0, 1), MPL_OK);
  ck_assert_uint_eq(w.units, 0);
  setenv("MPL_CPU_BF16", "1", 1);
  ck_assert_int_eq(mpl_gemm_bf16_hw(), can);
  unsetenv("MPL_CPU_BF16");
  mpl_gemm_bf16_free(&w);
  free(A), free(B), free(C);
}
END_TEST

/* ---- the pass ----------------------------------------------------------------------------- */

/* The graph of a program after autodiff and the precision pass, at the given precision. */
static Graph *compiled(const char *path, const char *precision, Graph **before) {
  Diag d;
  diag_init(&d, &arena, stderr);
  Node *prog = parse_file(&d, &arena, path);
  ck_assert_msg(prog && d.nerrors == 0, "%s does not parse", path);
  CompileOptions opt = {.stdlib_dir = "stdlib", .gpu_arch = "sm_90", .precision = precision};
  Graph *g = sema_program(&d, &arena, prog, &opt);
  ck_assert_msg(g && d.nerrors == 0, "%s does not check", path);
  g = shard_program(&d, g, false);
  ck_assert_int_eq(bal_stages(&d, g, 0), 0);
  ck_assert_int_eq(ad_backward(g, &d), 0);
  *before = g;
  return prec_apply(g);
}

/* FWD, then BWD_B, then BWD_W: the order a micro-batch runs its passes in (precision.c's). */
static int pass_order(Phase ph) { return ph == PH_FWD ? 0 : ph == PH_BWD_B ? 1 : ph == PH_BWD_W ? 2 : 3; }

/* The roundings the pass makes (pass 104: each of these broke with no test seeing it):
 *  - none of a value already exact (a second rounding of a rounding, through views), nor
 *    of the attention's lse or the fused cross-entropy's loss;
 *  - none above a transpose of the last two axes, however its axes are spelled: the
 *    rounding goes beneath it, so that the product reads it transposed;
 *  - none of a sum that reduces a product's matrix axes (a bias's gradient: f32);
 *  - a param's or input's rounding is read in its own pass only (rounded again in each,
 *    not held between passes);
 *  - a product reads an activation's rounding made in its own context (pass and
 *    recomputation) or in an earlier pass. */
static void check_roundings(const char *path, const Graph *g) {
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_ROUND_BF16) continue;
    const Op *x = g->ops[op->in[0]];
    ck_assert_msg(!prec_exact_bf16(g, op->in[0]), "%s: %%%d rounds %%%d %s, already bf16", path, i, op->in[0],
                  op_name(x->kind));
    /* the attention's lse (its RESULT) and the fused cross-entropy's loss are not products'
       results: f32 (pass 104: an lse rounded to bf16 was caught only by the e2e suite) */
    ck_assert_msg(!(x->kind == OP_RESULT && g->ops[x->in[0]]->kind == OP_SDPA) && x->kind != OP_CE_FUSED,
                  "%s: %%%d rounds %%%d, an attention's lse or a fused loss", path, i, op->in[0]);
    if (x->kind == OP_TRANSPOSE) {
      int r = x->shape.rank, a = x->axis < 0 ? x->axis + r : x->axis, b = x->axis2 < 0 ? x->axis2 + r : x->axis2;
      ck_assert_msg(!(r >= 2 && a + b == 2 * r - 3 && a != b), "%s: %%%d rounds a transpose of the last two axes (%d, %d)",
                    path, i, x->axis, x->axis2);
    }
    if (x->kind == OP_SUM_TO) {
      const Shape *to = &x->shape, *from = &g->ops[x->in[0]]->shape;
      ck_assert_msg(to->rank >= 2 && from->rank >= 2 && to->d[to->rank - 1] == from->d[from->rank - 1] &&
                        to->d[to->rank - 2] == from->d[from->rank - 2],
                    "%s: %%%d rounds a sum over a product's matrix axes (a bias's gradient)", path, i);
    }
    if (x->kind == OP_PARAM || x->kind == OP_INPUT)
      for (int u = 0; u < g->nops; u++)
        for (int j = 0; j < g->ops[u]->nin; j++)
          ck_assert_msg(g->ops[u]->in[j] != i || g->ops[u]->phase == op->phase,
                        "%s: %%%d, a rounding of a %s made in pass %d, read by %%%d in pass %d", path, i,
                        op_name(x->kind), op->phase, u, g->ops[u]->phase);
  }
  for (int u = 0; u < g->nops; u++) {
    const Op *mm = g->ops[u];
    if (mm->kind != OP_MATMUL) continue;
    for (int j = 0; j < 2; j++) {
      int v = mm->in[j];
      while (g->ops[v]->kind == OP_TRANSPOSE || g->ops[v]->kind == OP_RESHAPE || g->ops[v]->kind == OP_EXPAND ||
             g->ops[v]->kind == OP_SLICE)
        v = g->ops[v]->in[0];
      const Op *r = g->ops[v];
      if (r->kind != OP_ROUND_BF16) continue;
      ck_assert_msg((r->phase == mm->phase && r->recompute == mm->recompute) ||
                        pass_order(r->phase) < pass_order(mm->phase),
                    "%s: %%%d matmul (pass %d%s) reads rounding %%%d of pass %d%s", path, u, mm->phase,
                    mm->recompute ? ", recomputed" : "", v, r->phase, r->recompute ? ", recomputed" : "");
    }
  }
}

/* Every product reads bf16 values and only roundings read it; every GEMM step is bf16. */
static void check_bf16_program(const char *path) {
  Graph *before, *g = compiled(path, "bf16", &before);
  int nmm = 0, nround = 0;
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    nround += op->kind == OP_ROUND_BF16;
    if (op->kind != OP_MATMUL) continue;
    nmm++;
    for (int j = 0; j < 2; j++)
      ck_assert_msg(prec_exact_bf16(g, op->in[j]), "%s: %%%d matmul reads %%%d %s", path, i, op->in[j],
                    op_name(g->ops[op->in[j]]->kind));
    for (int u = i + 1; u < g->nops; u++)
      for (int j = 0; j < g->ops[u]->nin; j++)
        ck_assert_msg(g->ops[u]->in[j] != i || g->ops[u]->kind == OP_ROUND_BF16, "%s: %%%d %s reads matmul %%%d", path,
                      u, op_name(g->ops[u]->kind), i);
  }
  /* the fused ops' product operands too: sdpa's q, k, v; sdpa_grad's and its dout; the fused
     cross-entropy's x and w (pass 82: sdpa_grad's dout unrounded passed every test) */
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    static const int sdpa_in[] = {0, 1, 2, -1}, grad_in[] = {0, 1, 2, 5, -1}, ce_in[] = {0, 1, -1};
    const int *in = op->kind == OP_SDPA ? sdpa_in : op->kind == OP_SDPA_GRAD ? grad_in : op->kind == OP_CE_FUSED ? ce_in : NULL;
    for (int j = 0; in && in[j] >= 0; j++)
      ck_assert_msg(prec_exact_bf16(g, op->in[in[j]]), "%s: %%%d %s reads %%%d (input %d) %s", path, i, op_name(op->kind),
                    op->in[in[j]], in[j], op_name(g->ops[op->in[in[j]]]->kind));
  }
  ck_assert_int_gt(nmm, 0);
  ck_assert_int_ge(nround, nmm); /* at least each result */
  check_roundings(path, g);
  Diag d;
  diag_init(&d, &arena, stderr);
  Partition *p = part_build(&d, g);
  ck_assert_ptr_nonnull(p);
  Fused *fu = fuse_partition(&d, &arena, p);
  ck_assert_ptr_nonnull(fu);
  int ngemm = 0;
  for (int s = 0; s < fu->nstages; s++)
    for (int k = 0; k < PASS__COUNT; k++)
      for (int i = 0; i < fu->progs[s][k]->nsteps; i++) {
        const Step *st = &fu->progs[s][k]->steps[i];
        if (st->kind != STEP_GEMM) continue;
        ngemm++;
        ck_assert_msg(st->prec == PREC_BF16, "%s: a GEMM step of precision %d", path, st->prec);
      }
  ck_assert_int_gt(ngemm, 0);
  printf("%s: %d products, %d roundings (%d ops before), %d GEMM steps\n", path, nmm, nround, before->nops, ngemm);
}

/* bf16 storage (prec_narrow, after the partition): only roundings and views of them are
 * narrowed; every GEMM and fused attention reads all its inputs in one type; nothing
 * narrowed reaches a collective, the fused cross-entropy, a gradient accumulator or another
 * stage; the loss and logits stay f32. Returns how many values it narrowed. */
static int check_narrowed_n(const char *path, const char *mesh_pp, int *attn_grads) {
  Diag d;
  diag_init(&d, &arena, stderr);
  Node *prog = parse_file(&d, &arena, path);
  ck_assert_msg(prog && d.nerrors == 0, "%s does not parse", path);
  CompileOptions opt = {.stdlib_dir = "stdlib", .gpu_arch = "sm_90", .precision = "bf16"};
  if (mesh_pp) opt.mesh_set = true, opt.mesh = (Mesh){0, atoi(mesh_pp), 0};
  Graph *g = sema_program(&d, &arena, prog, &opt);
  ck_assert_msg(g && d.nerrors == 0, "%s does not check", path);
  g = shard_program(&d, g, false);
  ck_assert_int_eq(bal_stages(&d, g, 0), 0);
  ck_assert_int_eq(ad_backward(g, &d), 0);
  g = remat_apply(prec_apply(prec_lower_half(g)));
  part_join_backward(g);
  Partition *p = part_build(&d, g);
  ck_assert_ptr_nonnull(p);
  int n = prec_narrow(p), seen = 0;
  g = p->g;
  for (int v = 0; v < g->nops; v++) {
    const Op *op = g->ops[v];
    if (op->dtype != DT_BF16) continue;
    seen++;
    ck_assert_msg(prec_exact_bf16(g, v), "%s: %%%d %s narrowed", path, v, op_name(op->kind));
    for (int u = 0; u < g->nops; u++) {
      const Op *r = g->ops[u];
      for (int j = 0; j < r->nin; j++) {
        if (r->in[j] != v) continue;
        ck_assert_msg(r->stage < 0 || op->stage < 0 || r->stage == op->stage, "%s: %%%d read on another stage", path, v);
        bool one_type = r->kind == OP_MATMUL || r->kind == OP_SDPA || r->kind == OP_SDPA_GRAD;
        for (int k = 0; one_type && k < r->nin; k++)
          if (!(r->kind == OP_SDPA_GRAD && k == 4))
            ck_assert_msg(g->ops[r->in[k]]->dtype == DT_BF16, "%s: %%%d %s reads bf16 %%%d and %s %%%d", path, u,
                          op_name(r->kind), v, dtype_name(g->ops[r->in[k]]->dtype), r->in[k]);
        ck_assert_msg(r->kind != OP_CE_FUSED && r->kind != OP_PARAM_GRAD && r->kind != OP_RESULT &&
                          fuse_cat(r->kind) != CAT_COMM,
                      "%s: %%%d %s reads bf16 %%%d", path, u, op_name(r->kind), v);
      }
    }
  }
  ck_assert_int_eq(seen, n);
  /* the fused attention's backward reads q, k, v, out and dout as bf16 where all of them are
     (pass 104: a mask naming lse for dout kept every one of them f32, and no test saw it) */
  *attn_grads = 0;
  for (int u = 0; u < g->nops; u++) {
    const Op *r = g->ops[u];
    bool all = r->kind == OP_SDPA_GRAD;
    for (int k = 0; all && k < 6; k++) all = k == 4 || g->ops[r->in[k]]->dtype == DT_BF16;
    *attn_grads += all;
  }
  for (int s = 0; s < p->nstages; s++) {
    if (p->st[s].loss >= 0) ck_assert_int_eq(g->ops[p->st[s].loss]->dtype, DT_F32);
    if (p->st[s].logits >= 0) ck_assert_int_eq(g->ops[p->st[s].logits]->dtype, DT_F32);
  }
  for (int x = 0; x < p->nxfers; x++)
    for (int i = 0; i < p->xfers[x].vals.n; i++) ck_assert_int_ne(g->ops[p->xfers[x].vals.v[i]]->dtype, DT_BF16);
  Fused *fu = fuse_partition(&d, &arena, p);
  ck_assert_ptr_nonnull(fu);
  printf("%s (pp %s): %d values stored as bf16, %d attention backwards reading them\n", path,
         mesh_pp ? mesh_pp : "as written", n, *attn_grads);
  return n;
}

static int check_narrowed(const char *path, const char *mesh_pp) {
  int attn_grads;
  return check_narrowed_n(path, mesh_pp, &attn_grads);
}

START_TEST(test_narrow_programs) {
  int attn_grads;
  ck_assert_int_gt(check_narrowed_n("tests/gpu/models/gpt_sgd.mpl", NULL, &attn_grads), 0);
  ck_assert_int_gt(attn_grads, 0);
  ck_assert_int_gt(check_narrowed_n("examples/llama.mpl", NULL, &attn_grads), 0);
  ck_assert_int_gt(attn_grads, 0);
  check_narrowed("tests/unit/jobs/bf16_view_loss.mpl", NULL); /* the loss a view of a rounding: kept f32 */
  ck_assert_int_gt(check_narrowed("examples/gpt_tiny.mpl", "2"), 0);
  ck_assert_int_gt(check_narrowed("examples/moe.mpl", NULL), 0);
  ck_assert_int_gt(check_narrowed("examples/vit.mpl", NULL), 0);
  ck_assert_int_gt(check_narrowed("tests/e2e/recompute.mpl", NULL), 0);
}
END_TEST

/* A program's own half types (prec_lower_half): bf16 tensors are rounded to bf16 and f16 ones
 * to f16, never the other's rounding (pass 104: the two kinds swapped passed every suite,
 * the half programs' values being small and their checks loose). */
static void half_roundings(const char *path, int *nbf16, int *nf16) {
  Diag d;
  diag_init(&d, &arena, stderr);
  Node *prog = parse_file(&d, &arena, path);
  ck_assert_msg(prog && d.nerrors == 0, "%s does not parse", path);
  CompileOptions opt = {.stdlib_dir = "stdlib", .gpu_arch = "sm_90"};
  Graph *g = sema_program(&d, &arena, prog, &opt);
  ck_assert_msg(g && d.nerrors == 0, "%s does not check", path);
  g = shard_program(&d, g, false);
  ck_assert_int_eq(bal_stages(&d, g, 0), 0);
  ck_assert_int_eq(ad_backward(g, &d), 0);
  g = prec_lower_half(g);
  *nbf16 = *nf16 = 0;
  for (int i = 0; i < g->nops; i++) *nbf16 += g->ops[i]->kind == OP_ROUND_BF16, *nf16 += g->ops[i]->kind == OP_ROUND_F16;
}

START_TEST(test_half_kinds) {
  int b, f;
  half_roundings("tests/e2e/half_bf16.mpl", &b, &f);
  ck_assert_msg(b > 0 && f == 0, "half_bf16: %d bf16 roundings, %d f16", b, f);
  half_roundings("tests/e2e/half_f16.mpl", &b, &f);
  ck_assert_msg(f > 0 && b == 0, "half_f16: %d bf16 roundings, %d f16", b, f);
}
END_TEST

START_TEST(test_pass_programs) {
  check_bf16_program("tests/e2e/small_mlp.mpl");
  check_bf16_program("tests/gpu/models/gpt_sgd.mpl");
  check_bf16_program("examples/vit.mpl");   /* conv2d: im2col and a product */
  check_bf16_program("examples/llama.mpl"); /* sdpa with grouped-query heads */
  check_bf16_program("tests/e2e/recompute.mpl");
  check_bf16_program("tests/unit/jobs/gated_sdpa.mpl"); /* sdpa's gradient from a gate, not a product */
  check_bf16_program("tests/unit/jobs/bf16_views.mpl");
  check_bf16_program("tests/unit/jobs/bf16_recompute_ctx.mpl");
}
END_TEST

START_TEST(test_pass_f32_tf32) {
  Graph *before, *g = compiled("tests/gpu/models/gpt_sgd.mpl", NULL, &before);
  ck_assert_ptr_eq(g, before); /* f32: untouched */
  g = compiled("tests/gpu/models/gpt_sgd.mpl", "tf32", &before);
  ck_assert_ptr_eq(g, before);
  ck_assert_int_eq(g->train.precision, PREC_TF32);
  for (int i = 0; i < g->nops; i++) ck_assert_int_ne(g->ops[i]->kind, OP_ROUND_BF16);
}
END_TEST

/* ROUND_F16 (a program's own f16 tensors): the kernel against the compiler's _Float16
 * conversion (round to nearest, ties to even, subnormals, overflow to infinity) and against
 * the float64 reference, bit for bit; NaN stays NaN. Values over the f16 range (ties at
 * every exponent, subnormals, the largest finite value and past it) and random bits. */
START_TEST(test_round_f16_bits) {
  enum { NF16 = 1 << 16 };
  static const float edges[] = {0.0f, -0.0f, 1.0f, 1.0f + 0x1p-11f /* tie -> 1 */, 1.0f + 0x3p-11f /* tie -> up */,
                                65504.0f, 65519.0f, 65520.0f /* tie -> inf */, -65520.0f, 0x1p-14f, 0x1p-15f,
                                0x1p-24f, 0x1p-25f /* tie -> 0 */, 0x3p-25f /* tie -> 2^-23 */, 0x1.8p-24f,
                                1e-10f, 3e38f, INFINITY, -INFINITY, NAN};
  int64_t ne = (int64_t)(sizeof edges / sizeof edges[0]), n = ne + 2 * NF16;
  float *in = malloc(sizeof(float) * (size_t)n), *out = malloc(sizeof(float) * (size_t)n);
  uint64_t s = 0x2545F4914F6CDD1Dull;
  for (int64_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t r = (uint32_t)(s >> 32);
    if (i < ne) in[i] = edges[i];
    else if (i < ne + NF16) /* exponents 2^-30 .. 2^17: the f16 range and past both ends */
      in[i] = float_of((r & 0x807FFFFFu) | (uint32_t)(97 + (r >> 23) % 48) << 23);
    else in[i] = float_of(r);
  }
  run_round_kernel_of(OP_ROUND_F16, in, out, n);
  double *ref = ref_round(OP_ROUND_F16, in, n);
  for (int64_t i = 0; i < n; i++) {
    float want = (float)(_Float16)in[i];
    if (isnan(in[i])) {
      ck_assert_msg(isnan(out[i]) && isnan(ref[i]), "round_f16(NaN) is not NaN");
      continue;
    }
    ck_assert_msg(bits_of(out[i]) == bits_of(want), "round_f16(%a): kernel %a, _Float16 %a", (double)in[i],
                  (double)out[i], (double)want);
    ck_assert_msg(ref[i] == (double)want, "round_f16(%a): reference %a, _Float16 %a", (double)in[i], ref[i],
                  (double)want);
  }
  free(ref), free(in), free(out);
}
END_TEST

static Suite *bf16_suite(void) {
  Suite *s = suite_create("bf16");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_round_kernel_bits);
  tcase_add_test(tc, test_round_f16_bits);
  tcase_add_test(tc, test_gemm_paths);
  tcase_add_test(tc, test_gemm_switch);
  tcase_add_test(tc, test_half_kinds);
  tcase_add_test(tc, test_pass_programs);
  tcase_add_test(tc, test_pass_f32_tf32);
  tcase_add_test(tc, test_narrow_programs);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(bf16_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
