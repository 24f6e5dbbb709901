/*
 * test_sema.c — unit tests of the front end (compiler/sema*.c): shape inference,
 * instance and param naming, weight tying, stage inheritance, segments, the
 * i32 input bounds and the call sites of stdlib ops. Programs are parsed from
 * strings with parse_source; the stdlib is read from ./stdlib (tests run from the
 * repository root).
 * Exits non-zero when a check fails.
 */
#include "compiler/mplc.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct Ctx {
  Arena arena;
  Diag diag;
  FILE *sink;
  Graph *g;
} Ctx;

/* Compiles src (a whole program); ctx->g is NULL if there were errors. */
static Graph *compile(Ctx *c, const char *src) {
  arena_init(&c->arena);
  c->sink = fopen("/dev/null", "w");
  diag_init(&c->diag, &c->arena, c->sink);
  CompileOptions opt = {.stdlib_dir = getenv("MPL_STDLIB") ? getenv("MPL_STDLIB") : "stdlib", .gpu_arch = "sm_90"};
  Node *prog = parse_source(&c->diag, &c->arena, "test.mpl", src, strlen(src));
  c->g = c->diag.nerrors ? NULL : sema_program(&c->diag, &c->arena, prog, &opt);
  return c->g;
}

static void done(Ctx *c) {
  fclose(c->sink);
  arena_free(&c->arena);
}

/* The op of the loss's first input (the tensor the test computes). */
static Op *loss_input(Graph *g) { return g->ops[g->ops[g->loss]->in[0]]; }

static Op *find_param(Graph *g, const char *name) {
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->kind == OP_PARAM && !strcmp(g->ops[i]->name, name)) return g->ops[i];
  return NULL;
}

static int count_kind(Graph *g, OpKind k) {
  int n = 0;
  for (int i = 0; i < g->nops; i++) n += g->ops[i]->kind == k;
  return n;
}

static void check_shape(const Op *op, int rank, const int64_t *d) {
  ck_assert_int_eq(op->shape.rank, rank);
  for (int i = 0; i < rank; i++) ck_assert_int_eq(op->shape.d[i], d[i]);
}

/* A model returning sum(r) of a body over inputs (batch-leading, as every input) and the
 * body's params, so the loss is scalar. */
#define WRAP(inputs, body) \
  "model m(" inputs ") {\n" body "\n  return sum(r)\n}\ntrain m { batch = 2 }\n"

START_TEST(test_broadcast) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 1, 4]", "  param b: f32[3, 1] = zeros\n  r = a + b"));
  ck_assert_ptr_nonnull(g);
  Op *r = loss_input(g);
  ck_assert_int_eq(r->kind, OP_ADD);
  check_shape(r, 3, (int64_t[]){2, 3, 4});
  done(&c);
}
END_TEST

START_TEST(test_scalar_const) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 4]", "  r = a * 2"));
  ck_assert_ptr_nonnull(g);
  Op *r = loss_input(g);
  Op *k = g->ops[r->in[1]];
  ck_assert_int_eq(k->kind, OP_FULL);
  ck_assert_int_eq(k->shape.rank, 0);
  ck_assert_int_eq(k->dtype, DT_F32);
  ck_assert(k->value == 2.0);
  done(&c);
}
END_TEST

/* The value a compile-time expression folds to: `r = a * EXPR` compiles, and r's second
 * operand is the FULL op holding it. */
static double folded(const char *expr) {
  char src[256];
  snprintf(src, sizeof src, WRAP("a: f32[B, 4]", "  r = a * %s"), expr);
  Ctx c;
  Graph *g = compile(&c, src);
  ck_assert_msg(g != NULL, "%s does not compile", expr);
  Op *r = loss_input(g), *v = g->ops[r->in[1]];
  ck_assert_int_eq(v->kind, OP_FULL);
  double value = v->value;
  done(&c);
  return value;
}

/* The math built-ins fold on a compile-time number (LANGUAGE.md) to what their definitions
   give (PyTorch's: sigmoid 1 / (1 + e^-x), silu x sigmoid(x), gelu's tanh form), the value the
   graph's FULL then holds. */
START_TEST(test_const_math) {
  const double x = 0.7, k = sqrt(2.0 / acos(-1.0));
  const struct { const char *expr; double want; } cases[] = {
      {"sigmoid(0.7)", 1.0 / (1.0 + exp(-x))}, {"silu(0.7)", x / (1.0 + exp(-x))},
      {"gelu(0.7)", 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)))},
      {"rsqrt(0.7)", 1.0 / sqrt(x)}, {"sqrt(0.7)", sqrt(x)}, {"tanh(0.7)", tanh(x)}, {"exp(0.7)", exp(x)},
      {"log(0.7)", log(x)}, {"sin(0.7)", sin(x)}, {"cos(0.7)", cos(x)}, {"floor(-0.7)", -1.0},
      {"relu(-0.7)", 0.0}, {"abs(-0.7)", 0.7}, {"pow(0.7, 3)", x * x * x},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double v = folded(cases[i].expr);
    ck_assert_msg(fabs(v - cases[i].want) <= 1e-12 * fmax(1.0, fabs(cases[i].want)), "%s folds to %.17g, not %.17g",
                  cases[i].expr, v, cases[i].want);
  }
}
END_TEST

START_TEST(test_matmul_batch_broadcast) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 1, 3, 4]", "  param b: f32[5, 4, 6] = zeros\n  r = a @ b"));
  ck_assert_ptr_nonnull(g);
  Op *r = loss_input(g);
  ck_assert_int_eq(r->kind, OP_MATMUL);
  check_shape(r, 4, (int64_t[]){2, 5, 3, 6});
  done(&c);
}
END_TEST

/* Comparisons of compile-time ints and floats (where(cond, a, b) on a compile-time bool picks
   a or b), each operator at its boundary. */
START_TEST(test_const_compare) {
  const struct { const char *cond; bool want; } cases[] = {
      {"2 <= 2", true}, {"3 <= 2", false}, {"-3 <= -3", true}, {"2 < 2", false}, {"1 < 2", true},
      {"2 >= 2", true}, {"1 >= 2", false}, {"2 > 2", false}, {"3 > 2", true}, {"2 == 2", true},
      {"2 != 2", false}, {"2.0 <= 2.0", true}, {"2.5 <= 2", false}, {"2 < 2.5", true}, {"2.0 > 2.0", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char expr[64];
    snprintf(expr, sizeof expr, "where(%s, 3.0, 5.0)", cases[i].cond);
    ck_assert_msg(folded(expr) == (cases[i].want ? 3.0 : 5.0), "%s is %s", cases[i].cond, cases[i].want ? "false" : "true");
  }
}
END_TEST

START_TEST(test_matmul_transpose_fold) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 4]", "  param w: f32[6, 4] = zeros\n  r = a @ transpose(w, 0, 1)"));
  ck_assert_ptr_nonnull(g);
  Op *r = loss_input(g);
  ck_assert_int_eq(r->kind, OP_MATMUL);
  ck_assert(r->tb && !r->ta);
  check_shape(r, 2, (int64_t[]){2, 6});
  ck_assert_int_eq(count_kind(g, OP_TRANSPOSE), 0);
  done(&c);
}
END_TEST

/* An absent optional param is the identity of + and -: bias - x is -x (0 - x), not x. */
START_TEST(test_absent_minus) {
  Ctx c;
  Graph *g = compile(&c, "def f(x: f32[B, n], use_bias: bool) -> f32[B, n] {\n"
                         "  param bias: f32[n] = zeros if use_bias\n  return bias - x\n}\n"
                         "model m(a: f32[B, 4]) {\n  r = f(a, false) as layer\n  return sum(r)\n}\n"
                         "train m { batch = 2 }\n");
  ck_assert_ptr_nonnull(g);
  Op *r = loss_input(g);
  ck_assert_int_eq(r->kind, OP_NEG);
  ck_assert_int_eq(g->ops[r->in[0]]->kind, OP_INPUT);
  done(&c);
}
END_TEST

START_TEST(test_reduction_keepdims) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 3, 4]", "  r = mean(a, axis = -2, keepdims = true)"));
  ck_assert_ptr_nonnull(g);
  Op *r = loss_input(g);
  ck_assert_int_eq(r->kind, OP_MEAN);
  ck_assert_int_eq(r->axis, 1);
  ck_assert(r->keepdims);
  check_shape(r, 3, (int64_t[]){2, 1, 4});
  Op *loss = g->ops[g->loss];
  ck_assert_int_eq(loss->axis, AXIS_ALL);
  ck_assert_int_eq(loss->shape.rank, 0);
  done(&c);
}
END_TEST

START_TEST(test_reshape_infer) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 3, 4]", "  r = reshape(a, -1, 6)"));
  ck_assert_ptr_nonnull(g);
  Op *r = loss_input(g);
  ck_assert_int_eq(r->kind, OP_RESHAPE);
  check_shape(r, 2, (int64_t[]){4, 6});
  done(&c);
}
END_TEST

START_TEST(test_split) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 9]", "  p, q, s = split(a, 3, axis = -1)\n  r = q"));
  ck_assert_ptr_nonnull(g);
  ck_assert_int_eq(count_kind(g, OP_SLICE), 3);
  Op *r = loss_input(g);
  ck_assert_int_eq(r->kind, OP_SLICE);
  ck_assert_int_eq(r->axis, 1);
  ck_assert_int_eq(r->begin, 3);
  ck_assert_int_eq(r->end, 6);
  check_shape(r, 2, (int64_t[]){2, 3});
  done(&c);
}
END_TEST

START_TEST(test_split_not_dividing) {
  Ctx c;
  ck_assert_ptr_null(compile(&c, WRAP("a: f32[B, 10]", "  p, q, s = split(a, 3)\n  r = p")));
  ck_assert_int_eq(c.diag.nerrors, 1);
  done(&c);
}
END_TEST

static const char *gpt_src =
    "import nn\n"
    "mesh(pp = 2)\n"
    "model gpt(idx: i32[B, T], targets: i32[B, T]) {\n"
    "  x = embedding(idx, 64, 16) as wte\n"
    "  x = x + embedding(arange(T), 8, 16) as wpe\n"
    "  for i in 0..2 @stage(i) {\n"
    "    x = nn.block(x, 2) as h[i]\n"
    "  }\n"
    "  x = nn.layernorm(x) as ln_f @stage(1)\n"
    "  logits = x @ transpose(wte.weight, 0, 1)\n"
    "  return cross_entropy(logits, targets)\n"
    "}\n"
    "train gpt { batch = 4; seq = 8; microbatches = 2 }\n";

START_TEST(test_gpt_names_and_tying) {
  Ctx c;
  Graph *g = compile(&c, gpt_src);
  ck_assert_ptr_nonnull(g);
  const char *names[] = {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight",
                         "h.0.attn.c_proj.bias", "h.1.ln_2.bias", "h.1.mlp.c_fc.weight",
                         "h.1.mlp.c_proj.weight", "ln_f.weight", "ln_f.bias"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) ck_assert_msg(find_param(g, names[i]), "missing %s", names[i]);
  Op *cattn = find_param(g, "h.0.attn.c_attn.weight");
  check_shape(cattn, 2, (int64_t[]){16, 48});
  /* tying: the logits matmul reads the embedding's own PARAM op */
  Op *logits = g->ops[g->ops[g->loss]->in[0]];
  ck_assert_int_eq(logits->kind, OP_MATMUL);
  ck_assert(logits->tb);
  ck_assert_ptr_eq(g->ops[logits->in[1]], find_param(g, "wte.weight"));
  ck_assert_int_eq(count_kind(g, OP_PARAM), 2 + 2 * 12 + 2);
  /* B = batch / microbatches, T = seq; i32 input bounds */
  Op *idx = g->ops[0];
  check_shape(idx, 2, (int64_t[]){2, 8});
  ck_assert(idx->value == 64);
  ck_assert(g->ops[1]->value == 64);
  done(&c);
}
END_TEST

START_TEST(test_gpt_stages) {
  Ctx c;
  Graph *g = compile(&c, gpt_src);
  ck_assert_ptr_nonnull(g);
  ck_assert_int_eq(g->nstages, 2);
  ck_assert(!g->auto_stages);
  ck_assert_int_eq(g->ops[g->loss]->stage, 1);
  for (int i = 0; i < g->nops; i++) {
    Op *op = g->ops[i];
    OpClass cls = op_info[op->kind].cls;
    if (cls == OPC_L || cls == OPC_C) ck_assert_int_eq(op->stage, -1);
    else ck_assert(op->stage == 0 || op->stage == 1);
    for (int j = 0; j < op->nin; j++) ck_assert(g->ops[op->in[j]]->stage <= op->stage);
  }
  /* the embeddings have no staged input: they run where first used (stage 0) */
  ck_assert_int_eq(g->ops[3]->kind, OP_EMBEDDING);
  ck_assert_int_eq(g->ops[3]->stage, 0);
  done(&c);
}
END_TEST

START_TEST(test_auto_names) {
  Ctx c;
  Graph *g = compile(&c,
                     "import nn\n"
                     "def two(x: f32[..., n]) {\n  return nn.linear(nn.linear(x, n), n)\n}\n"
                     "model m(x: f32[B, 4], y: i32[B]) {\n"
                     "  h = nn.linear(x, 4)\n  h = two(h)\n  h = nn.linear(h, 3)\n"
                     "  return cross_entropy(h, y)\n}\n");
  ck_assert_ptr_nonnull(g);
  ck_assert_ptr_nonnull(find_param(g, "linear_0.weight"));
  ck_assert_ptr_nonnull(find_param(g, "linear_1.bias"));
  ck_assert_ptr_nonnull(find_param(g, "two_0.linear_0.weight"));
  ck_assert_ptr_nonnull(find_param(g, "two_0.linear_1.weight"));
  ck_assert_ptr_null(find_param(g, "linear_2.weight"));
  ck_assert(g->ops[1]->value == 3); /* y's bound: the class count */
  done(&c);
}
END_TEST

START_TEST(test_duplicate_instance) {
  Ctx c;
  ck_assert_ptr_null(compile(&c, "import nn\nmodel m(x: f32[B, 4], y: i32[B]) {\n"
                                 "  h = nn.linear(x, 4) as a\n  h = nn.linear(h, 4) as a\n"
                                 "  return cross_entropy(h, y)\n}\n"));
  ck_assert_int_eq(c.diag.nerrors, 1);
  done(&c);
}
END_TEST

START_TEST(test_stage_inherit) {
  Ctx c;
  Graph *g = compile(&c,
                     "mesh(pp = 3)\n"
                     "model m(x: f32[B, 4], y: i32[B]) {\n"
                     "  a = relu(x) @stage(1)\n"
                     "  b = a * 2.0\n"
                     "  k = exp(x)\n"
                     "  c = b + k @stage(2)\n"
                     "  z = tanh(x) @stage(0)\n"
                     "  return cross_entropy(c + z, y)\n}\n");
  ck_assert_ptr_nonnull(g);
  int stage_of[OP__COUNT];
  for (int i = 0; i < OP__COUNT; i++) stage_of[i] = -2;
  for (int i = 0; i < g->nops; i++) stage_of[g->ops[i]->kind] = g->ops[i]->stage;
  ck_assert_int_eq(stage_of[OP_RELU], 1);
  ck_assert_int_eq(stage_of[OP_MUL], 1);  /* inherited from a */
  ck_assert_int_eq(stage_of[OP_EXP], 2);  /* no staged input: its earliest use */
  ck_assert_int_eq(stage_of[OP_TANH], 0);
  ck_assert_int_eq(stage_of[OP_CROSS_ENTROPY], 2);
  ck_assert_int_eq(stage_of[OP_INPUT], -1);
  done(&c);
}
END_TEST

START_TEST(test_backward_flow) {
  Ctx c;
  ck_assert_ptr_null(compile(&c, "mesh(pp = 2)\nmodel m(x: f32[B, 4], y: i32[B]) {\n"
                                 "  a = relu(x) @stage(1)\n  b = tanh(a) @stage(0)\n"
                                 "  return cross_entropy(b, y) @stage(1)\n}\n"));
  ck_assert_int_eq(c.diag.nerrors, 1);
  done(&c);
}
END_TEST

START_TEST(test_segments_and_auto) {
  Ctx c;
  Graph *g = compile(&c, "import nn\nmesh(pp = 2)\nmodel m(x: f32[B, 4], y: i32[B]) {\n"
                         "  x = relu(x)\n"
                         "  for i in 0..3 {\n    x = nn.linear(x, 4) as h[i]\n  }\n"
                         "  return cross_entropy(x, y)\n}\n");
  ck_assert_ptr_nonnull(g);
  ck_assert(g->auto_stages);
  ck_assert_int_eq(g->ops[0]->seg, -1);           /* inputs: before the body */
  ck_assert_int_eq(find_param(g, "h.0.weight")->seg, 1);
  ck_assert_int_eq(find_param(g, "h.2.bias")->seg, 3);
  ck_assert_int_eq(g->ops[g->loss]->seg, 4);
  done(&c);
}
END_TEST

/* Ops a stdlib def makes remember the user's call that led there (Op.site, for errors);
 * the model's own ops and those of the user's defs do not. */
START_TEST(test_call_sites) {
  Ctx c;
  Graph *g = compile(&c, "import nn\ndef twice(x: f32[B, n]) -> f32[B, n] {\n  return x * 2.0\n}\n"
                         "model m(x: f32[B, 4], y: i32[B]) {\n"
                         "  h = nn.block(reshape(twice(x), B, 1, 4), 2) as blk\n"
                         "  return cross_entropy(reshape(h, B, 4), y)\n}\n");
  ck_assert_ptr_nonnull(g);
  const CallSite *site = NULL;
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->loc.file && !strncmp(op->loc.file, "<stdlib>/", 9)) {
      ck_assert_ptr_nonnull(op->site);
      ck_assert_int_eq(op->site->loc.line, 6); /* the nn.block call */
      ck_assert_int_eq(op->site->loc.col, 7);
      if (op->kind == OP_SDPA) site = op->site; /* nn.attention's fused sdpa */
    } else {
      ck_assert_ptr_null(op->site);
    }
  }
  ck_assert_ptr_nonnull(site);
  ck_assert_str_eq(site->inside, "nn.attention (called by nn.block)");
  done(&c);
}
END_TEST

/* conv2d's output is [N, O, (H + 2p - kh) / s + 1, (W + 2p - kw) / s + 1] (torch's): a kernel
   of 3 rows and 2 columns over 5 x 6 leaves 3 x 5 places, 5 x 7 with padding 1 (pass 86: kw
   for kh was caught by one random program only) */
START_TEST(test_conv2d_rect_kernel) {
  Ctx c;
  Graph *g = compile(&c, WRAP("a: f32[B, 1, 5, 6]", "  param w: f32[4, 1, 3, 2] = zeros\n  r = conv2d(a, w)"));
  ck_assert_ptr_nonnull(g);
  check_shape(loss_input(g), 4, (int64_t[]){2, 4, 3, 5});
  done(&c);
  g = compile(&c, WRAP("a: f32[B, 1, 5, 6]", "  param w: f32[4, 1, 3, 2] = zeros\n  r = conv2d(a, w, padding = 1)"));
  ck_assert_ptr_nonnull(g);
  check_shape(loss_input(g), 4, (int64_t[]){2, 4, 5, 7});
  done(&c);
}
END_TEST

START_TEST(test_several_errors) {
  Ctx c;
  ck_assert_ptr_null(compile(&c, "model m(x: f32[B, 4], y: i32[B]) {\n"
                                 "  a = x + nope\n  b = a * 2.0\n  c = x + y\n"
                                 "  d = reshape(x, 5)\n  return cross_entropy(x, y)\n}\n"));
  ck_assert_int_eq(c.diag.nerrors, 3);
  done(&c);
}
END_TEST

static Suite *sema_suite(void) {
  Suite *s = suite_create("sema");
  TCase *shapes = tcase_create("shapes");
  tcase_add_test(shapes, test_broadcast);
  tcase_add_test(shapes, test_const_math);
  tcase_add_test(shapes, test_scalar_const);
  tcase_add_test(shapes, test_matmul_batch_broadcast);
  tcase_add_test(shapes, test_matmul_transpose_fold);
  tcase_add_test(shapes, test_reduction_keepdims);
  tcase_add_test(shapes, test_reshape_infer);
  tcase_add_test(shapes, test_split);
  tcase_add_test(shapes, test_split_not_dividing);
  tcase_add_test(shapes, test_conv2d_rect_kernel);
  suite_add_tcase(s, shapes);
  TCase *names = tcase_create("names");
  tcase_add_test(names, test_gpt_names_and_tying);
  tcase_add_test(names, test_const_compare);
  tcase_add_test(names, test_auto_names);
  tcase_add_test(names, test_duplicate_instance);
  suite_add_tcase(s, names);
  TCase *place = tcase_create("placement");
  tcase_add_test(place, test_gpt_stages);
  tcase_add_test(place, test_stage_inherit);
  tcase_add_test(place, test_backward_flow);
  tcase_add_test(place, test_segments_and_auto);
  tcase_add_test(place, test_several_errors);
  tcase_add_test(place, test_call_sites);
  tcase_add_test(place, test_absent_minus);
  suite_add_tcase(s, place);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(sema_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
