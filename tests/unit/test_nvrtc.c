/*
 * test_nvrtc.c — the CUDA C emitter through NVRTC: a KernelSet with every kind of
 * kernel (elementwise chains with broadcasting, every unary/binary op, casts and
 * comparisons, reductions over each axis, softmax, the layernorm pattern,
 * cross-entropy and its gradient, embedding and its scatter-add gradient, dropout,
 * shape ops, creation ops, gradient accumulation; the v2 ops of issue 13: sin, cos,
 * floor, silu, remainder, argmax, topk, cumsum, gather, one_hot, im2col and their
 * gradients, run-time checks; the bf16 rounding), fused and unfused, compiles for
 * sm_90 with no error and no warning; and every kernel of real programs compiled at
 * precision = bf16 (a GPT, a Llama, a ViT with its convolution, a mixture of experts)
 * compiles for sm_80 and sm_90. Needs no GPU (NVRTC only makes PTX). Built without
 * CUDA, it checks the "built without CUDA" error and passes with a note. And NVRTC's
 * PTX in the compile cache (test_ptx_cache).
 */
#include <check.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/autodiff.h"
#include "compiler/kernel.h"
#include "runtime/mpl.h"
#ifdef MPL_HAVE_CUDA
#include "runtime/cuda_dl.h"
#endif

static Arena arena;
static Graph *G;

static int op(OpKind k, DType dt, int rank, const int64_t *d, int nin, ...) {
  int in[8];
  va_list ap;
  va_start(ap, nin);
  for (int i = 0; i < nin; i++) in[i] = va_arg(ap, int);
  va_end(ap);
  Op *o = graph_add(G, k, nin, in, (Loc){0});
  o->dtype = dt;
  o->shape.rank = rank;
  for (int i = 0; i < rank; i++) o->shape.d[i] = d[i];
  return o->id;
}

static Op *O(int id) { return G->ops[id]; }
static int like(OpKind k, int x) { return op(k, O(x)->dtype, O(x)->shape.rank, O(x)->shape.d, 1, x); }
static int like2(OpKind k, DType dt, int x, int y) { return op(k, dt, O(x)->shape.rank, O(x)->shape.d, 2, x, y); }

/* One graph touching every lowerable op kind. */
static void build_everything(void) {
  static const int64_t X[] = {2, 6, 8}, R[] = {8}, ROWS[] = {2, 6}, K1[] = {2, 6, 1}, SC[] = {0};
  static const int64_t W[] = {10, 8}, EG[] = {10, 8}, T[] = {8, 6, 2}, SL[] = {2, 3, 8}, PD[] = {2, 9, 8};
  static const int64_t CC[] = {2, 12, 8}, M[] = {6, 6}, EX[] = {3, 2, 6, 8};
  int x = op(OP_INPUT, DT_F32, 3, X, 0), b = op(OP_INPUT, DT_F32, 1, R, 0);
  int idx = op(OP_INPUT, DT_I32, 2, ROWS, 0), w = op(OP_PARAM, DT_F32, 2, W, 0);
  O(w)->name = "w";
  int y = like2(OP_ADD, DT_F32, x, b);
  OpKind unary[] = {OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_RSQRT, OP_TANH, OP_SIGMOID, OP_RELU, OP_GELU, OP_ABS, OP_SIGN};
  for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++) like(unary[i], y);
  int p = like(OP_POW, y);
  O(p)->value = 1.5;
  OpKind binary[] = {OP_SUB, OP_MUL, OP_DIV, OP_MAXIMUM, OP_MINIMUM, OP_GELU_GRAD, OP_RELU_GRAD};
  for (size_t i = 0; i < sizeof binary / sizeof binary[0]; i++) like2(binary[i], DT_F32, y, x);
  OpKind cmps[] = {OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE};
  int m = -1;
  for (int i = 0; i < 6; i++) m = like2(cmps[i], DT_BOOL, y, x);
  int m2 = like2(OP_AND, DT_BOOL, m, like(OP_NOT, m));
  m2 = like2(OP_OR, DT_BOOL, m2, m);
  op(OP_WHERE, DT_F32, 3, X, 3, m2, x, y);
  int xi = op(OP_CAST, DT_I32, 3, X, 1, y);
  like2(OP_ADD, DT_I32, xi, xi);
  op(OP_CAST, DT_F32, 3, X, 1, m2);
  op(OP_CAST, DT_BOOL, 3, X, 1, xi);
  OpKind reds[] = {OP_SUM, OP_MEAN, OP_AMAX};
  for (int r = 0; r < 3; r++) {
    int s = op(reds[r], DT_F32, 3, K1, 1, y);
    O(s)->axis = -1, O(s)->keepdims = true;
    int s0 = op(reds[r], DT_F32, 2, (int64_t[]){6, 8}, 1, y);
    O(s0)->axis = 0;
    int sa = op(reds[r], DT_F32, 0, SC, 1, y);
    O(sa)->axis = AXIS_ALL;
  }
  int sm = like(OP_SOFTMAX, y), ls = like(OP_LOG_SOFTMAX, y), sm1 = like(OP_SOFTMAX, y);
  O(sm)->axis = -1, O(ls)->axis = -1, O(sm1)->axis = 1;
  /* layernorm pattern */
  int mu = op(OP_MEAN, DT_F32, 3, K1, 1, x);
  O(mu)->axis = -1, O(mu)->keepdims = true;
  int d = like2(OP_SUB, DT_F32, x, mu);
  int var = op(OP_MEAN, DT_F32, 3, K1, 1, like2(OP_MUL, DT_F32, d, d));
  O(var)->axis = -1, O(var)->keepdims = true;
  int eps = op(OP_FULL, DT_F32, 0, SC, 0);
  O(eps)->value = 1e-5;
  int rs = op(OP_RSQRT, DT_F32, 3, K1, 1, op(OP_ADD, DT_F32, 3, K1, 2, var, eps));
  like2(OP_MUL, DT_F32, d, rs);
  /* cross entropy and its gradient */
  int ce = op(OP_CROSS_ENTROPY, DT_F32, 0, SC, 2, y, idx);
  op(OP_CE_GRAD, DT_F32, 3, X, 3, y, idx, ce);
  /* embedding, its gradient, accumulation */
  int e = op(OP_EMBEDDING, DT_F32, 3, X, 2, idx, w);
  int eg = op(OP_EMBEDDING_GRAD, DT_F32, 2, EG, 2, idx, like(OP_TANH, e));
  int pg = op(OP_PARAM_GRAD, DT_F32, 2, EG, 1, eg);
  O(pg)->key = w;
  int pg2 = op(OP_PARAM_GRAD, DT_F32, 2, EG, 1, like(OP_EXP, eg));
  O(pg2)->key = w, O(pg2)->use = 1;
  int dr = like(OP_DROPOUT, y);
  O(dr)->value = 0.1, O(dr)->key = 3;
  /* shape ops */
  int t = op(OP_TRANSPOSE, DT_F32, 3, T, 1, y);
  O(t)->axis = 0, O(t)->axis2 = 2;
  like(OP_EXP, t);
  int sl = op(OP_SLICE, DT_F32, 3, SL, 1, y);
  O(sl)->axis = 1, O(sl)->begin = 2, O(sl)->end = 5;
  like(OP_NEG, sl);
  int pd = op(OP_PAD, DT_F32, 3, PD, 1, x);
  O(pd)->axis = 1, O(pd)->begin = 3;
  like(OP_ABS, pd);
  int cc = op(OP_CONCAT, DT_F32, 3, CC, 2, x, y);
  O(cc)->axis = 1;
  like(OP_EXP, cc);
  op(OP_EXPAND, DT_F32, 4, EX, 1, y);
  op(OP_SUM_TO, DT_F32, 1, R, 1, like(OP_EXP, y));
  int rsh = op(OP_RESHAPE, DT_F32, 2, (int64_t[]){12, 8}, 1, like(OP_EXP, x));
  like(OP_NEG, rsh);
  /* creation ops */
  int ar = op(OP_ARANGE, DT_I32, 1, R, 0);
  like2(OP_ADD, DT_F32, y, op(OP_CAST, DT_F32, 1, R, 1, ar));
  int cm = op(OP_CAUSAL_MASK, DT_BOOL, 2, M, 0);
  op(OP_CAST, DT_F32, 2, M, 1, cm);
}

/* The v2 ops with kernels of their own (issue 13): elementwise, remainders (f32, i32),
 * argmax (a long row: a warp kernel), topk, cumsum both ways, gather and its gradient,
 * one_hot, a convolution's patches and back, the run-time checks. */
static void build_v2(void) {
  static const int64_t X[] = {2, 6, 80}, AM[] = {2, 6}, TK[] = {2, 6, 3}, I[] = {2, 4, 80}, OH[] = {2, 4, 80, 5};
  static const int64_t IMG[] = {2, 3, 6, 5}, COLS[] = {2, 27, 9}, SC[] = {0};
  int x = op(OP_INPUT, DT_F32, 3, X, 0), idx = op(OP_INPUT, DT_I32, 3, I, 0);
  OpKind unary[] = {OP_SIN, OP_COS, OP_FLOOR, OP_SILU, OP_ROUND_BF16};
  for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++) like(unary[i], x);
  like2(OP_REM, DT_F32, x, like(OP_COS, x));
  like2(OP_REM, DT_I32, idx, idx);
  O(op(OP_ARGMAX, DT_I32, 2, AM, 1, x))->axis = 2;
  O(op(OP_TOPK, DT_I32, 3, TK, 1, x))->axis = 2;
  O(like(OP_CUMSUM, x))->axis = 2;
  O(like(OP_CUMSUM_REV, x))->axis = 0;
  O(op(OP_GATHER, DT_F32, 3, I, 2, x, idx))->axis = 1;
  O(op(OP_GATHER_GRAD, DT_F32, 3, X, 2, idx, like(OP_TANH, op(OP_GATHER, DT_F32, 3, I, 2, x, idx))))->axis = 1;
  op(OP_ONE_HOT, DT_F32, 4, OH, 1, idx);
  int img = op(OP_INPUT, DT_F32, 4, IMG, 0);
  int cols = op(OP_IM2COL, DT_F32, 3, COLS, 1, img), back = op(OP_COL2IM, DT_F32, 4, IMG, 1, like(OP_EXP, cols));
  O(cols)->axis = O(cols)->axis2 = O(back)->axis = O(back)->axis2 = 3;
  O(cols)->begin = O(back)->begin = 2, O(cols)->end = O(back)->end = 1;
  int ck = op(OP_CHECK, DT_I32, 0, SC, 1, idx), ck2 = op(OP_CHECK, DT_I32, 0, SC, 1, idx);
  O(ck)->key = OP_GATHER, O(ck)->value = 6, O(ck2)->key = OP_REM;
}

/* Lowers every non-leaf op into ks (fused, then unfused into the same set). */
static KernelSet *everything_kernels(void) {
  build_everything();
  build_v2();
  graph_verify(G);
  int *ops = malloc(sizeof(int) * (size_t)G->nops), n = 0;
  for (int i = 0; i < G->nops; i++)
    if (O(i)->kind != OP_INPUT && O(i)->kind != OP_PARAM) ops[n++] = i;
  KernelSet *ks = kset_new(&arena);
  fuse_program(&arena, G, ops, n, ks);
  ks->no_fusion = true;
  fuse_program(&arena, G, ops, n, ks);
  free(ops);
  return ks;
}

static void setup(void) {
  arena_init(&arena);
  G = graph_new(&arena);
}

static void teardown(void) { arena_free(&arena); }

START_TEST(test_every_kernel_kind_compiles) {
  KernelSet *ks = everything_kernels();
  ck_assert_int_gt(ks->n, 20);
  char *src = cg_cuda_source(&arena, ks);
  ck_assert(strstr(src, "extern \"C\" __global__ void k0_") != NULL);
  char *ptx = NULL, err[65536];
  size_t len = 0;
  int rc = cg_nvrtc_compile(src, "sm_90", &ptx, &len, err, sizeof err);
#ifdef MPL_HAVE_CUDA
  ck_assert_msg(rc == 0, "%s\n--- source ---\n%.4000s", err, src);
  ck_assert(len > 0 && strstr(ptx, ".target sm_90") != NULL);
  ck_assert(strstr(ptx, ".entry k0_") != NULL);
  free(ptx);
#else
  ck_assert_int_ne(rc, 0);
  ck_assert(strstr(err, "without CUDA") != NULL);
  printf("note: built without CUDA; NVRTC not exercised\n");
#endif
}
END_TEST

/* The kernels of a program compiled as mplc does (compiler/main.c's passes up to fusion) at
 * precision = bf16, whatever its train block says. */
static KernelSet *bf16_program_kernels(const char *path) {
  Diag d;
  diag_init(&d, &arena, stderr);
  Node *prog = parse_file(&d, &arena, path);
  ck_assert_msg(prog && d.nerrors == 0, "%s does not parse", path);
  CompileOptions opt = {.stdlib_dir = "stdlib", .gpu_arch = "sm_90", .precision = "bf16"};
  Graph *g = sema_program(&d, &arena, prog, &opt);
  ck_assert_msg(g && d.nerrors == 0, "%s does not check", path);
  g = shard_program(&d, g, false);
  ck_assert_int_eq(bal_stages(&d, g, 0), 0);
  ck_assert_int_eq(ad_backward(g, &d), 0);
  g = prec_apply(prec_lower_half(g));
  Partition *p = part_build(&d, g);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_gt(prec_narrow(p), 0); /* bf16 storage: kernels that load and store bf16 */
  Fused *fu = fuse_partition(&d, &arena, p);
  ck_assert_ptr_nonnull(fu);
  return fu->ks;
}

START_TEST(test_bf16_programs_compile) {
  static const char *const programs[] = {"tests/gpu/models/gpt_sgd.mpl", "examples/llama.mpl", "examples/vit.mpl",
                                         "examples/moe.mpl", "tests/e2e/half_f16.mpl"};
  static const char *const archs[] = {"sm_80", "sm_90"};
  for (size_t i = 0; i < sizeof programs / sizeof programs[0]; i++) {
    KernelSet *ks = bf16_program_kernels(programs[i]);
    char *src = cg_cuda_source(&arena, ks);
    ck_assert_msg(strstr(src, "__float_as_int") && strstr(src, "__int_as_float"), "%s: no bf16 rounding", programs[i]);
    bool own = strstr(programs[i], "half_") != NULL; /* the program's own f16 tensors: round_f16's kernels */
    ck_assert_msg(own || (strstr(src, "unsigned short *__restrict__") && strstr(src, "(unsigned short)(__float_as_uint(") &&
                          strstr(src, "__uint_as_float((unsigned)a")),
                  "%s: no bf16 argument loaded and stored", programs[i]);
    for (int a = 0; a < 2; a++) {
      char *ptx = NULL, err[65536];
      size_t len = 0;
      int rc = cg_nvrtc_compile(src, archs[a], &ptx, &len, err, sizeof err);
#ifdef MPL_HAVE_CUDA
      ck_assert_msg(rc == 0, "%s for %s: %s", programs[i], archs[a], err);
      char target[32];
      snprintf(target, sizeof target, ".target %s", archs[a]);
      ck_assert(len > 0 && strstr(ptx, target) != NULL);
      free(ptx);
#else
      ck_assert_int_ne(rc, 0);
#endif
    }
  }
}
END_TEST

START_TEST(test_errors_and_warnings_fail) {
  char *ptx = NULL, err[65536];
  size_t len = 0;
  int rc = cg_nvrtc_compile("extern \"C\" __global__ void f(float *a) { a[0] = undefined_thing; }\n", "sm_90", &ptx,
                            &len, err, sizeof err);
  ck_assert_int_ne(rc, 0);
#ifdef MPL_HAVE_CUDA
  ck_assert_msg(strstr(err, "undefined_thing") != NULL, "log missing: %s", err);
  /* a warning (an unused variable) is an error too */
  rc = cg_nvrtc_compile("extern \"C\" __global__ void g(float *a) { int unused = 3; a[0] = 1.0f; }\n", "sm_90", &ptx,
                        &len, err, sizeof err);
  ck_assert_msg(rc != 0, "a warning passed");
  rc = cg_nvrtc_compile("extern \"C\" __global__ void h(float *a) { a[0] = 1.0f; }\n", "bogus", &ptx, &len, err,
                        sizeof err);
  ck_assert_int_ne(rc, 0);
#endif
}
END_TEST


/* NVRTC's PTX in the compile cache (kcache.c, cuda_dl.c): the first compile keeps it, the
 * second is the same PTX from the cache; an entry holding a warning fails as NVRTC's warning
 * does; an entry that is not a log and a PTX is a miss, compiled again. (The other tests run
 * with the cache off: they are NVRTC's.) */
START_TEST(test_ptx_cache) {
#ifdef MPL_HAVE_CUDA
  char dir[] = "/tmp/mpl_nvrtc_cache_XXXXXX", cmd[128];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  setenv("MPL_CACHE_DIR", dir, 1);
  const char *src = "extern \"C\" __global__ void c(float *a) { a[threadIdx.x] = 2.0f; }\n";
  const char *opts[] = {"--gpu-architecture=compute_90", "--fmad=false", "-default-device", "--prec-div=true",
                        "--prec-sqrt=true"}; /* cg_nvrtc_compile's */
  char *ptx1 = NULL, *ptx2 = NULL, err[4096] = "";
  size_t len1 = 0, len2 = 0;
  int64_t h0, m0, p0, h, m, p;
  mpl_kcache_stats(&h0, &m0, &p0);
  ck_assert_msg(cg_nvrtc_compile(src, "sm_90", &ptx1, &len1, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(cg_nvrtc_compile(src, "sm_90", &ptx2, &len2, err, sizeof err) == 0, "%s", err);
  mpl_kcache_stats(&h, &m, &p);
  ck_assert_int_eq(p - p0, 1);
  ck_assert_int_eq(h - h0, 1);
  ck_assert_uint_eq(len1, len2);
  ck_assert(memcmp(ptx1, ptx2, len1) == 0 && ptx1[len1 - 1] == 0);
  uint8_t *entry;
  const char *log, *ptx;
  ck_assert(mpl_nvrtc_cache_get(src, "mpl_kernels.cu", opts, 5, &entry, &log, &ptx, NULL));
  ck_assert_str_eq(log, "");
  ck_assert_str_eq(ptx, ptx1);
  mpl_free(entry);
  /* an entry with a warning in its log */
  mpl_nvrtc_cache_put(src, "mpl_kernels.cu", opts, 5, "mpl_kernels.cu(1): warning #177-D: variable \"u\" was declared but never referenced", ptx1);
  ck_assert_int_ne(cg_nvrtc_compile(src, "sm_90", &ptx2 /* (untouched) */, &len2, err, sizeof err), 0);
  ck_assert_msg(strstr(err, "warnings are errors") && strstr(err, "warning #177-D") && strstr(err, "(in kernel c)"), "%s", err);
  /* entries that are not a log and a PTX: a miss, compiled and kept again */
  static const char *const bad[] = {"no NUL at all", "only a log\0", "\0a PTX without its NUL", "three\0texts\0here\0"};
  static const size_t badlen[] = {13, 11, 22, 17};
  for (int i = 0; i < 4; i++) {
    uint8_t *e2;
    const char *l2, *p2;
    ck_assert(mpl_nvrtc_cache_get(src, "mpl_kernels.cu", opts, 5, &e2, &l2, &p2, NULL)); /* (the warning's entry) */
    mpl_free(e2);
    /* its output replaced, with a right length and checksum (kcache.c's format: the output
       last, its length at byte 24, its FNV-1a at 32): the one ptx- file of the folder */
    snprintf(cmd, sizeof cmd, "ls %s/ptx-* | head -n 1", dir);
    FILE *pp = popen(cmd, "r");
    char path[256] = "";
    ck_assert(fgets(path, sizeof path, pp) != NULL);
    pclose(pp);
    path[strcspn(path, "\n")] = 0;
    uint8_t *data;
    size_t dlen;
    ck_assert_int_eq(mpl_file_read_all(path, &data, &dlen, NULL), MPL_OK);
    uint64_t olen;
    memcpy(&olen, data + 24, 8);
    size_t keep = dlen - olen;
    uint64_t nl = badlen[i], sum = 1469598103934665603ull;
    for (size_t k = 0; k < nl; k++) sum = (sum ^ (uint8_t)bad[i][k]) * 1099511628211ull;
    memcpy(data + 24, &nl, 8);
    memcpy(data + 32, &sum, 8);
    FILE *f = fopen(path, "wb");
    ck_assert(fwrite(data, 1, keep, f) == keep && fwrite(bad[i], 1, nl, f) == nl);
    fclose(f);
    mpl_free(data);
    ck_assert_msg(!mpl_nvrtc_cache_get(src, "mpl_kernels.cu", opts, 5, &e2, &l2, &p2, NULL), "bad entry %d read", i);
    ck_assert_msg(cg_nvrtc_compile(src, "sm_90", &ptx2, &len2, err, sizeof err) == 0, "bad entry %d: %s", i, err);
    ck_assert(len2 == len1 && memcmp(ptx1, ptx2, len1) == 0);
    free(ptx2);
    mpl_nvrtc_cache_put(src, "mpl_kernels.cu", opts, 5, "warning", ptx1); /* the next round's entry */
  }
  free(ptx1);
  setenv("MPL_CACHE_DIR", "", 1);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
#endif
}
END_TEST

static Suite *nvrtc_suite(void) {
  Suite *s = suite_create("nvrtc");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_every_kernel_kind_compiles);
  tcase_add_test(tc, test_errors_and_warnings_fail);
  tcase_add_test(tc, test_bf16_programs_compile);
  tcase_add_test(tc, test_ptx_cache);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  setenv("MPL_CACHE_DIR", "", 1); /* NVRTC itself, not the compile cache (test_ptx_cache turns it on) */
  SRunner *sr = srunner_create(nvrtc_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
