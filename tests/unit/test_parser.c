/*
 * test_parser.c — the parser, ast_dump and diagnostics: the programs of
 * LANGUAGE.md, precedence, annotation placement, exact error text, recovery
 * from several errors, and no crash or hang on hostile input.
 */
#include "lang/ast.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *gpt_src =
    "# examples/gpt_tiny.mpl \xe2\x80\x94 a character-level GPT on two pipeline stages\n"
    "import nn\n"
    "\n"
    "const vocab = 256\n"
    "const ctx = 128\n"
    "const d = 192\n"
    "const heads = 6\n"
    "const layers = 4\n"
    "\n"
    "mesh(pp = 2)\n"
    "\n"
    "model gpt(idx: i32[B, T], targets: i32[B, T]) {\n"
    "  x = embedding(idx, vocab, d) as wte\n"
    "  x = x + embedding(arange(T), ctx, d) as wpe\n"
    "  for i in 0..layers @stage(i * 2 / layers) {\n"
    "    x = nn.block(x, heads) as h[i]\n"
    "  }\n"
    "  x = nn.layernorm(x) as ln_f @stage(1)\n"
    "  logits = x @ transpose(wte.weight, 0, 1)        # tied unembedding\n"
    "  return cross_entropy(logits, targets)\n"
    "}\n"
    "\n"
    "train gpt {\n"
    "  data = tokens(\"examples/data/tiny.bin\")   # llm.c token file\n"
    "  batch = 16\n"
    "  seq = ctx\n"
    "  microbatches = 4\n"
    "  schedule = 1f1b\n"
    "  optimizer = adamw(lr = 1e-3, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1)\n"
    "  steps = 200\n"
    "  seed = 1337\n"
    "}\n";

static const char *linear_src =
    "def linear(x: f32[..., n], out: int, use_bias: bool = true) -> f32[..., out] {\n"
    "  param weight: f32[n, out] = normal(0.02)\n"
    "  param bias: f32[out] = zeros if use_bias\n"
    "  return x @ weight + bias\n"
    "}\n";

/* One parse with its arena and the diagnostics it printed. */
typedef struct Parsed {
  Arena arena;
  Diag diag;
  Node *prog;
  char *errs;
  size_t errlen;
} Parsed;

static Parsed *parse(const char *src) {
  Parsed *p = calloc(1, sizeof *p);
  arena_init(&p->arena);
  FILE *f = open_memstream(&p->errs, &p->errlen);
  diag_init(&p->diag, &p->arena, f);
  p->prog = parse_source(&p->diag, &p->arena, "t.mpl", src, strlen(src));
  fclose(f);
  ck_assert_ptr_nonnull(p->prog);
  ck_assert_int_eq(p->prog->kind, N_PROGRAM);
  return p;
}

static void done(Parsed *p) {
  arena_free(&p->arena);
  free(p->errs);
  free(p);
}

/* The value of `const z = EXPR`, parsed without errors. */
static Node *parse_expr(Parsed **pp, const char *expr) {
  char buf[512];
  snprintf(buf, sizeof buf, "const z = %s\n", expr);
  *pp = parse(buf);
  ck_assert_msg((*pp)->diag.nerrors == 0, "errors: %s", (*pp)->errs);
  ck_assert_int_eq((*pp)->prog->list.n, 1);
  return (*pp)->prog->list.items[0]->a;
}

static Node *item(Parsed *p, int i) { return p->prog->list.items[i]; }

START_TEST(gpt_program) {
  Parsed *p = parse(gpt_src);
  ck_assert_msg(p->diag.nerrors == 0, "errors: %s", p->errs);
  ck_assert_int_eq(p->prog->list.n, 9);
  ck_assert_int_eq(item(p, 0)->kind, N_IMPORT);
  ck_assert_str_eq(item(p, 0)->name, "nn");
  ck_assert_int_eq(item(p, 1)->kind, N_CONST);
  ck_assert_int_eq(item(p, 1)->a->ival, 256);
  Node *mesh = item(p, 6);
  ck_assert_int_eq(mesh->kind, N_MESH);
  ck_assert_str_eq(mesh->list.items[0]->name, "pp");
  Node *m = item(p, 7);
  ck_assert_int_eq(m->kind, N_MODEL);
  ck_assert_str_eq(m->name, "gpt");
  ck_assert_int_eq(m->list.n, 2);
  Node *idx = m->list.items[0];
  ck_assert_str_eq(idx->a->name, "i32");
  ck_assert(idx->a->has_dims);
  ck_assert_int_eq(idx->a->list.n, 2);
  ck_assert_int_eq(m->body.n, 6);
  ck_assert_int_eq(m->end.line, 21);
  Node *x0 = m->body.items[0];
  ck_assert_int_eq(x0->kind, N_ASSIGN);
  ck_assert_str_eq(x0->a->as_name->name, "wte");
  Node *loop = m->body.items[2];
  ck_assert_int_eq(loop->kind, N_FOR);
  ck_assert_str_eq(loop->name, "i");
  ck_assert_int_eq(loop->annots.n, 1);
  ck_assert_int_eq(loop->annots.items[0]->op, ANNOT_STAGE);
  ck_assert_int_eq(loop->annots.items[0]->list.items[0]->a->op, BOP_DIV);
  Node *blk = loop->body.items[0]->a;
  ck_assert_int_eq(blk->kind, N_CALL);
  ck_assert_int_eq(blk->a->kind, N_MEMBER);
  ck_assert_str_eq(blk->a->name, "block");
  ck_assert_str_eq(blk->as_name->name, "h");
  ck_assert_str_eq(blk->as_index->name, "i");
  Node *lnf = m->body.items[3];
  ck_assert_int_eq(lnf->annots.n, 1);
  ck_assert_int_eq(lnf->annots.items[0]->loc.line, 18);
  ck_assert_int_eq(lnf->annots.items[0]->loc.col, 31);
  ck_assert_int_eq(m->body.items[4]->a->op, BOP_MATMUL);
  ck_assert_int_eq(m->body.items[5]->kind, N_RETURN);
  Node *t = item(p, 8);
  ck_assert_int_eq(t->kind, N_TRAIN);
  ck_assert_int_eq(t->list.n, 8);
  ck_assert_str_eq(t->list.items[0]->a->list.items[0]->a->sval, "examples/data/tiny.bin");
  ck_assert_str_eq(t->list.items[4]->a->name, "1f1b");
  Node *opt = t->list.items[5]->a;
  ck_assert_int_eq(opt->list.n, 4);
  ck_assert_str_eq(opt->list.items[0]->name, "lr");
  ck_assert_double_eq(opt->list.items[0]->a->fval, 1e-3);
  ck_assert_str_eq(opt->list.items[3]->name, "weight_decay");
  done(p);
}
END_TEST

START_TEST(linear_def) {
  Parsed *p = parse(linear_src);
  ck_assert_msg(p->diag.nerrors == 0, "errors: %s", p->errs);
  Node *d = item(p, 0);
  ck_assert_int_eq(d->kind, N_DEF);
  ck_assert_int_eq(d->list.n, 3);
  ck_assert_int_eq(d->list.items[0]->a->list.items[0]->kind, N_ELLIPSIS);
  ck_assert_str_eq(d->list.items[1]->a->name, "int");
  ck_assert(!d->list.items[1]->a->has_dims);
  ck_assert_int_eq(d->list.items[2]->b->kind, N_BOOL);
  ck_assert_int_eq(d->list.items[2]->b->ival, 1);
  ck_assert_str_eq(d->a->name, "f32");
  ck_assert_int_eq(d->a->list.n, 2);
  ck_assert_int_eq(d->body.n, 3);
  Node *w = d->body.items[0], *b = d->body.items[1], *r = d->body.items[2];
  ck_assert_int_eq(w->kind, N_PARAM);
  ck_assert_ptr_null(w->c);
  ck_assert_str_eq(w->b->a->name, "normal");
  ck_assert_str_eq(b->b->name, "zeros");
  ck_assert_str_eq(b->c->name, "use_bias");
  ck_assert_int_eq(r->a->op, BOP_ADD);
  ck_assert_int_eq(r->a->a->op, BOP_MATMUL);
  done(p);
}
END_TEST

START_TEST(precedence) {
  Parsed *p;
  Node *e = parse_expr(&p, "x + f(y) as a");
  ck_assert_int_eq(e->op, BOP_ADD);
  ck_assert_int_eq(e->b->kind, N_CALL);
  ck_assert_str_eq(e->b->a->name, "f");
  ck_assert_str_eq(e->b->as_name->name, "a");
  done(p);
  e = parse_expr(&p, "a @ b + c");
  ck_assert_int_eq(e->op, BOP_ADD);
  ck_assert_int_eq(e->a->op, BOP_MATMUL);
  done(p);
  e = parse_expr(&p, "not a and b");
  ck_assert_int_eq(e->op, BOP_AND);
  ck_assert_int_eq(e->a->kind, N_UNOP);
  ck_assert_int_eq(e->a->op, UOP_NOT);
  done(p);
  e = parse_expr(&p, "a or b and not c == d");
  ck_assert_int_eq(e->op, BOP_OR);
  ck_assert_int_eq(e->b->op, BOP_AND);
  ck_assert_int_eq(e->b->b->op, UOP_NOT);
  ck_assert_int_eq(e->b->b->a->op, BOP_EQ);
  done(p);
  e = parse_expr(&p, "-a * b - c / d % e");
  ck_assert_int_eq(e->op, BOP_SUB);
  ck_assert_int_eq(e->a->op, BOP_MUL);
  ck_assert_int_eq(e->a->a->kind, N_UNOP);
  ck_assert_int_eq(e->b->op, BOP_MOD);
  ck_assert_int_eq(e->b->a->op, BOP_DIV);
  done(p);
  e = parse_expr(&p, "a - b - c");
  ck_assert_int_eq(e->a->op, BOP_SUB);
  ck_assert_str_eq(e->b->name, "c");
  done(p);
  e = parse_expr(&p, "f(x) as h[i + 1].w");
  ck_assert_int_eq(e->kind, N_MEMBER);
  ck_assert_str_eq(e->a->as_name->name, "h");
  ck_assert_int_eq(e->a->as_index->op, BOP_ADD);
  done(p);
  e = parse_expr(&p, "x[..., a:b, 0:2, :, 1:, :-1]");
  ck_assert_int_eq(e->kind, N_INDEX);
  ck_assert_int_eq(e->list.n, 6);
  ck_assert_int_eq(e->list.items[0]->kind, N_ELLIPSIS);
  ck_assert_int_eq(e->list.items[1]->kind, N_SLICE);
  ck_assert_ptr_null(e->list.items[3]->a);
  ck_assert_ptr_null(e->list.items[3]->b);
  ck_assert_ptr_null(e->list.items[4]->b);
  ck_assert_int_eq(e->list.items[5]->b->kind, N_UNOP);
  done(p);
  e = parse_expr(&p, "softmax(x, axis = -1)");
  ck_assert_str_eq(e->list.items[1]->name, "axis");
  done(p);
}
END_TEST

START_TEST(statements_and_annotations) {
  Parsed *p = parse("model m(x: f32[B, T]) {\n"
                    "  q, k, v = split(x, 3, axis = -1); y = q\n"
                    "  @stage(0) {\n"
                    "    y = f(y)\n"
                    "  }\n"
                    "  if a { y = 1 } else if b { y = 2 } else { y = 3 }\n"
                    "  param w: f32[d, 3 * d] = normal(0.02) @shard(1, groups = 3) @recompute\n"
                    "  g(y) @device(1)\n"
                    "  { z = 1 } @recompute\n"
                    "  return y }\n");
  ck_assert_msg(p->diag.nerrors == 0, "errors: %s", p->errs);
  NodeList *b = &item(p, 0)->body;
  ck_assert_int_eq(b->n, 8);
  ck_assert_int_eq(b->items[0]->kind, N_ASSIGN);
  ck_assert_int_eq(b->items[0]->list.n, 3);
  ck_assert_int_eq(b->items[1]->kind, N_ASSIGN);
  ck_assert_int_eq(b->items[1]->loc.line, 2);
  Node *blk = b->items[2];
  ck_assert_int_eq(blk->kind, N_BLOCK);
  ck_assert_int_eq(blk->annots.n, 1);
  ck_assert_int_eq(blk->body.n, 1);
  ck_assert_int_eq(blk->body.items[0]->annots.n, 0);
  Node *iff = b->items[3];
  ck_assert_int_eq(iff->kind, N_IF);
  ck_assert_int_eq(iff->else_body.n, 1);
  ck_assert_int_eq(iff->else_body.items[0]->kind, N_IF);
  ck_assert_int_eq(iff->else_body.items[0]->else_body.n, 1);
  Node *w = b->items[4];
  ck_assert_int_eq(w->annots.n, 2);
  ck_assert_int_eq(w->annots.items[0]->op, ANNOT_SHARD);
  ck_assert_int_eq(w->annots.items[0]->list.n, 2);
  ck_assert_str_eq(w->annots.items[0]->list.items[1]->name, "groups");
  ck_assert_int_eq(w->annots.items[1]->op, ANNOT_RECOMPUTE);
  ck_assert_int_eq(w->annots.items[1]->list.n, 0);
  ck_assert_int_eq(b->items[5]->kind, N_EXPRSTMT);
  ck_assert_int_eq(b->items[5]->annots.items[0]->op, ANNOT_DEVICE);
  ck_assert_int_eq(b->items[6]->kind, N_BLOCK);
  ck_assert_int_eq(b->items[6]->annots.n, 1);
  ck_assert_int_eq(b->items[7]->kind, N_RETURN);
  done(p);
}
END_TEST

START_TEST(dump_is_stable) {
  Parsed *p = parse("const x = 1.5e3 + 0.1 * inf\nconst s = \"a\\\"b\"\n");
  char *buf;
  size_t len;
  FILE *f = open_memstream(&buf, &len);
  ast_dump(f, p->prog);
  fclose(f);
  ck_assert_str_eq(buf, "PROGRAM @1:1\n"
                        "  CONST x @1:1\n"
                        "    BINOP + @1:11\n"
                        "      FLOAT 1500 @1:11\n"
                        "      BINOP * @1:19\n"
                        "        FLOAT 0.1 @1:19\n"
                        "        FLOAT inf @1:25\n"
                        "  CONST s @2:1\n"
                        "    STRING \"a\\\"b\" @2:11\n");
  free(buf);
  done(p);
}
END_TEST

START_TEST(error_text_exact) {
  Parsed *p = parse("const a = )\n");
  ck_assert_int_eq(p->diag.nerrors, 1);
  ck_assert_str_eq(p->errs, "t.mpl:1:11: error: unexpected ')', expecting expression\n"
                            "const a = )\n"
                            "          ^\n");
  done(p);
  p = parse("model m() {\n\tx = (1 +\n\t\t2 ]\n}\n");
  ck_assert_str_eq(p->errs, "t.mpl:3:5: error: unexpected ']'\n"
                            "\t\t2 ]\n"
                            "\t\t  ^\n"
                            "t.mpl:2:6: note: to match this '('\n"
                            "\tx = (1 +\n"
                            "\t    ^\n");
  done(p);
}
END_TEST

START_TEST(unclosed_brace_note) {
  Parsed *p = parse("import nn\ndef f(x: f32[n]) {\n  y = x\n  return y\n");
  ck_assert_int_eq(p->diag.nerrors, 1);
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:4:11: error: unexpected end of file"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:2:18: note: to match this '{'\n"));
  ck_assert_int_eq(p->prog->list.n, 1); /* the import survives */
  done(p);
}
END_TEST

START_TEST(recovery_reports_several) {
  Parsed *p = parse("model m(x: f32[n]) {\n"
                    "  y = x +\n"
                    "  z = (y * 2\n"
                    "  w = ) 3\n"
                    "  v = y\n"
                    "  return y\n"
                    "}\n"
                    "const c 3\n"
                    "train m { steps = 10\n  seed = = 1 }\n");
  ck_assert_int_eq(p->diag.nerrors, 4);
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:2:10: error: unexpected newline, expecting expression"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:4:3: error: unexpected identifier 'w'"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:8:9: error: unexpected integer 3, expecting '='"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:10:10: error: unexpected '='"));
  ck_assert_int_eq(p->prog->list.n, 2);
  Node *m = item(p, 0);
  ck_assert_int_eq(m->kind, N_MODEL);
  ck_assert_int_eq(m->body.items[m->body.n - 1]->kind, N_RETURN);
  ck_assert_int_eq(item(p, 1)->kind, N_TRAIN);
  ck_assert_int_eq(item(p, 1)->list.n, 1);
  done(p);
}
END_TEST

START_TEST(else_on_next_line_and_notes) {
  Parsed *p = parse("model m() {\n  if a {\n    x = 1\n  }\n  # c\n\n  else {\n    x = 2 }\n  elsewhere = 1\n}\n");
  ck_assert_msg(p->diag.nerrors == 0, "errors: %s", p->errs);
  ck_assert_int_eq(item(p, 0)->body.n, 2);
  ck_assert_int_eq(item(p, 0)->body.items[0]->else_body.n, 1);
  done(p);
  p = parse("model m() {\n  y = (x +\n  return y\n}\nx = 1\n");
  ck_assert_int_eq(p->diag.nerrors, 2);
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:3:3: error: unexpected 'return', expecting expression\n"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:2:7: note: to match this '('\n"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:5:1: error: unexpected identifier 'x', expecting 'import', "
                                        "'const', 'mesh', 'def', 'model' or 'train'\n"));
  done(p);
  p = parse("def f() {\n  ) = 1\n}\n");
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:2:3: error: unexpected ')', expecting a statement or '}'\n"));
  done(p);
}
END_TEST

START_TEST(semantic_syntax_errors) {
  Parsed *p = parse("def f(x: g32) {\n  a, b + 1 = x\n  y = x @stage\n}\n");
  ck_assert_int_eq(p->diag.nerrors, 3);
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:1:10: error: unknown type 'g32'"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:2:6: error: cannot assign to this expression"));
  ck_assert_ptr_nonnull(strstr(p->errs, "t.mpl:3:9: error: '@stage' needs arguments"));
  done(p);
}
END_TEST

START_TEST(diag_limits_and_forms) {
  Arena a;
  arena_init(&a);
  char *buf;
  size_t len;
  FILE *f = open_memstream(&buf, &len);
  Diag d;
  diag_init(&d, &a, f);
  ck_assert_int_eq(d.max_errors, 50);
  d.max_errors = 2;
  diag_add_file(&d, "f.mpl", "ab\tc\nxyz", 8);
  Loc l = {"f.mpl", 1, 4};
  diag_error(&d, l, "one %d", 1);
  diag_note(&d, (Loc){"f.mpl", 2, 4}, "here");
  diag_error(&d, (Loc){"other.mpl", 3, 1}, "two");
  diag_error(&d, l, "three");
  diag_note(&d, l, "dropped");
  diag_error(&d, l, "four");
  diag_error_noloc(&d, "five");
  fclose(f);
  ck_assert_int_eq(d.nerrors, 5);
  ck_assert_str_eq(buf, "f.mpl:1:4: error: one 1\n"
                        "ab\tc\n"
                        "  \t^\n"
                        "f.mpl:2:4: note: here\n"
                        "xyz\n"
                        "   ^\n"
                        "other.mpl:3:1: error: two\n"
                        "mplc: too many errors, stopping\n");
  free(buf);
  f = open_memstream(&buf, &len);
  diag_init(&d, &a, f);
  diag_error_noloc(&d, "no %s", "file");
  fclose(f);
  ck_assert_str_eq(buf, "mplc: error: no file\n");
  free(buf);
  arena_free(&a);
}
END_TEST

/* A deterministic generator of token soup and random bytes. */
static unsigned rng_next(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return *s >> 8;
}

START_TEST(hostile_input) {
  static const char *pieces[] = {
      "model", "def", "(", ")", "[", "]", "{", "}", "\n", ";", "x", "1", "2.5", "@stage(1)", "@",
      "=", ",", "as", "h", "for", "in", "..", "...", "if", "else", "param", ":", "f32", "\"s\"",
      "+", "-", "not", "and", "#c\n", "\xff", "\0", "return", "train", "mesh", "const", ".", "->",
  };
  unsigned s = 42;
  char buf[600];
  for (int iter = 0; iter < 3000; iter++) {
    size_t n = 0;
    while (n < 500) {
      if (iter % 3 == 0) {
        buf[n++] = (char)(rng_next(&s) & 0xff);
        continue;
      }
      const char *pc = pieces[rng_next(&s) % (sizeof pieces / sizeof *pieces)];
      size_t k = *pc ? strlen(pc) : 1;
      memcpy(buf + n, pc, k);
      n += k;
      buf[n++] = ' ';
    }
    Arena a;
    arena_init(&a);
    FILE *f = fopen("/dev/null", "w");
    Diag d;
    diag_init(&d, &a, f);
    Node *p = parse_source(&d, &a, "fuzz.mpl", buf, n);
    ck_assert_ptr_nonnull(p);
    FILE *dump = fopen("/dev/null", "w");
    ast_dump(dump, p);
    fclose(dump);
    fclose(f);
    arena_free(&a);
  }
}
END_TEST

/* The GPT program with a few bytes deleted, replaced or duplicated. */
START_TEST(mutated_programs) {
  size_t len = strlen(gpt_src);
  char *buf = malloc(len * 2 + 16);
  unsigned s = 7;
  static const char junk[] = "(){}[]=,:@.\n\"#-+ ax19";
  for (int iter = 0; iter < 4000; iter++) {
    memcpy(buf, gpt_src, len + 1);
    size_t n = len;
    int edits = 1 + (int)(rng_next(&s) % 4);
    for (int e = 0; e < edits; e++) {
      size_t at = rng_next(&s) % n;
      switch (rng_next(&s) % 3) {
      case 0: memmove(buf + at, buf + at + 1, n - at); n--; break;
      case 1: buf[at] = junk[rng_next(&s) % (sizeof junk - 1)]; break;
      default: memmove(buf + at + 1, buf + at, n - at + 1); n++; break;
      }
    }
    Arena a;
    arena_init(&a);
    FILE *f = fopen("/dev/null", "w");
    Diag d;
    diag_init(&d, &a, f);
    Node *p = parse_source(&d, &a, "mut.mpl", buf, n);
    ck_assert_ptr_nonnull(p);
    ast_dump(f, p);
    fclose(f);
    arena_free(&a);
  }
  free(buf);
}
END_TEST

START_TEST(deep_nesting) {
  enum { N = 200000 };
  char *src = malloc(4 * N + 32);
  /* brackets */
  strcpy(src, "const z = ");
  memset(src + 10, '(', N);
  src[10 + N] = 0;
  Parsed *p = parse(src);
  ck_assert_int_eq(p->diag.nerrors, 1); /* not also "unexpected end of file" where the scan stopped */
  ck_assert_ptr_nonnull(strstr(p->errs, "brackets nested too deeply"));
  done(p);
  /* a long left-associative chain */
  strcpy(src, "const z = 1");
  size_t n = strlen(src);
  for (int i = 0; i < N; i++) {
    memcpy(src + n, "+1", 2);
    n += 2;
  }
  src[n] = 0;
  p = parse(src);
  ck_assert_int_eq(p->diag.nerrors, 1);
  ck_assert_ptr_nonnull(strstr(p->errs, "expression too deep: more than 200 levels of operations (each operator of a chain"));
  FILE *dump = fopen("/dev/null", "w");
  ast_dump(dump, p->prog);
  fclose(dump);
  done(p);
  /* unary chains: bounded by the parser stack, never a crash */
  strcpy(src, "const z = ");
  memset(src + 10, '-', N);
  strcpy(src + 10 + N, "1");
  p = parse(src);
  ck_assert_int_ge(p->diag.nerrors, 1);
  done(p);
  free(src);
}
END_TEST

static Suite *parser_suite(void) {
  Suite *s = suite_create("parser");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, gpt_program);
  tcase_add_test(tc, linear_def);
  tcase_add_test(tc, precedence);
  tcase_add_test(tc, statements_and_annotations);
  tcase_add_test(tc, dump_is_stable);
  tcase_add_test(tc, error_text_exact);
  tcase_add_test(tc, unclosed_brace_note);
  tcase_add_test(tc, recovery_reports_several);
  tcase_add_test(tc, semantic_syntax_errors);
  tcase_add_test(tc, else_on_next_line_and_notes);
  tcase_add_test(tc, diag_limits_and_forms);
  tcase_add_test(tc, hostile_input);
  tcase_add_test(tc, mutated_programs);
  tcase_add_test(tc, deep_nesting);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(parser_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
