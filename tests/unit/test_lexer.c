/*
 * test_lexer.c — the scanner: token kinds, values and locations (columns after
 * tabs), `0..2`, `1f1b`, `@stage` vs `@`, newlines inside brackets, floats,
 * strings, and located errors for bad input.
 */
#include "lang/parse_int.h"
#include "parser.h"
#include "lexer.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAXTOK = 64 };

typedef struct Lexed {
  int n;
  int tok[MAXTOK];
  YYSTYPE val[MAXTOK];
  YYLTYPE loc[MAXTOK];
  int nerrors;
  char errs[2048];
} Lexed;

/* Scans text (len bytes) to the end; diagnostics go into out->errs. */
static void lex_text(Lexed *out, const char *text, size_t len) {
  static Arena arena; /* freed at the start of the next call */
  arena_free(&arena);
  arena_init(&arena);
  memset(out, 0, sizeof *out);
  FILE *errf = fmemopen(out->errs, sizeof out->errs - 1, "w");
  Diag d;
  diag_init(&d, &arena, errf);
  diag_add_file(&d, "t.mpl", text, len);
  ParseCtx ctx = {.diag = &d, .arena = &arena, .path = "t.mpl", .line = 1, .col = 1, .at_stmt_start = true};
  yyscan_t sc;
  ck_assert_int_eq(yylex_init_extra(&ctx, &sc), 0);
  YY_BUFFER_STATE b = yy_scan_bytes(text, (int)len, sc);
  YYSTYPE v;
  YYLTYPE l;
  for (int t; (t = yylex(&v, &l, sc)) != 0; out->n++) {
    if (out->n >= MAXTOK) continue;
    out->tok[out->n] = t;
    out->val[out->n] = v;
    out->loc[out->n] = l;
  }
  yy_delete_buffer(b, sc);
  yylex_destroy(sc);
  fclose(errf);
  out->nerrors = d.nerrors;
}

static void lex(Lexed *out, const char *text) { lex_text(out, text, strlen(text)); }

#define TOK(i, t, l, c)                                                       \
  do {                                                                        \
    ck_assert_int_eq(L.tok[i], (t));                                          \
    ck_assert_int_eq(L.loc[i].first_line, (l));                               \
    ck_assert_int_eq(L.loc[i].first_column, (c));                             \
  } while (0)

START_TEST(range_not_float) {
  Lexed L;
  lex(&L, "x = 0..2");
  ck_assert_int_eq(L.n, 5);
  TOK(0, IDENT, 1, 1);
  ck_assert_str_eq(L.val[0].s, "x");
  TOK(1, '=', 1, 3);
  TOK(2, INT, 1, 5);
  ck_assert_int_eq(L.val[2].i, 0);
  TOK(3, DOTDOT, 1, 6);
  TOK(4, INT, 1, 8);
  ck_assert_int_eq(L.val[4].i, 2);
  ck_assert_int_eq(L.nerrors, 0);
}
END_TEST

START_TEST(columns_after_tabs) {
  Lexed L;
  lex(&L, "a\n\tx\t= 12 # c\n  y");
  ck_assert_int_eq(L.n, 7);
  TOK(0, IDENT, 1, 1);
  TOK(1, NEWLINE, 1, 2);
  TOK(2, IDENT, 2, 2);
  TOK(3, '=', 2, 4);
  TOK(4, INT, 2, 6);
  ck_assert_int_eq(L.loc[4].last_column, 7);
  TOK(5, NEWLINE, 2, 12);
  TOK(6, IDENT, 3, 3);
}
END_TEST

START_TEST(numbers_and_words) {
  Lexed L;
  lex(&L, "1f1b 1e-3 2.5e4 0.02 inf 7 3E2 1.");
  ck_assert_int_eq(L.n, 9);
  TOK(0, IDENT, 1, 1);
  ck_assert_str_eq(L.val[0].s, "1f1b");
  ck_assert_int_eq(L.tok[1], FLOAT);
  ck_assert_double_eq(L.val[1].f, 1e-3);
  ck_assert_int_eq(L.tok[2], FLOAT);
  ck_assert_double_eq(L.val[2].f, 25000.0);
  ck_assert_int_eq(L.tok[3], FLOAT);
  ck_assert_double_eq(L.val[3].f, 0.02);
  ck_assert_int_eq(L.tok[4], FLOAT);
  ck_assert(isinf(L.val[4].f));
  ck_assert_int_eq(L.tok[5], INT);
  ck_assert_int_eq(L.val[5].i, 7);
  ck_assert_int_eq(L.tok[6], FLOAT);
  ck_assert_double_eq(L.val[6].f, 300.0);
  TOK(7, INT, 1, 32); /* `1.` is 1 then '.' */
  TOK(8, '.', 1, 33);
  ck_assert_int_eq(L.nerrors, 0);
}
END_TEST

/* An int literal is decimal whatever its leading zeros (not C's octal: 010 is ten). */
START_TEST(leading_zeros_decimal) {
  Lexed L;
  lex(&L, "010 0099 007");
  ck_assert_int_eq(L.n, 3);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(L.tok[i], INT);
  ck_assert_int_eq(L.val[0].i, 10);
  ck_assert_int_eq(L.val[1].i, 99);
  ck_assert_int_eq(L.val[2].i, 7);
  ck_assert_int_eq(L.nerrors, 0);
}
END_TEST

START_TEST(annotations_vs_matmul) {
  Lexed L;
  lex(&L, "@stage(1) a @ b @w @recompute @stages @device @shard");
  ck_assert_int_eq(L.n, 14);
  TOK(0, ANNOT, 1, 1);
  ck_assert_int_eq(L.val[0].op, ANNOT_STAGE);
  TOK(1, '(', 1, 7);
  TOK(4, IDENT, 1, 11);
  TOK(5, '@', 1, 13);
  TOK(6, IDENT, 1, 15);
  TOK(7, '@', 1, 17);
  TOK(8, IDENT, 1, 18);
  ck_assert_str_eq(L.val[8].s, "w");
  TOK(9, ANNOT, 1, 20);
  ck_assert_int_eq(L.val[9].op, ANNOT_RECOMPUTE);
  TOK(10, '@', 1, 31);
  TOK(11, IDENT, 1, 32);
  ck_assert_str_eq(L.val[11].s, "stages");
  ck_assert_int_eq(L.val[12].op, ANNOT_DEVICE);
  ck_assert_int_eq(L.val[13].op, ANNOT_SHARD);
}
END_TEST

START_TEST(newlines_in_brackets) {
  Lexed L;
  lex(&L, "\n\n# lead\nf(a,\n  b[1,\n 2])\n\n\n  # c\nx {\n}\n");
  int want[] = {IDENT, '(', IDENT, ',', IDENT, '[', INT, ',', INT, ']', ')', NEWLINE,
                IDENT, '{', NEWLINE, '}', NEWLINE};
  ck_assert_int_eq(L.n, (int)(sizeof want / sizeof *want));
  for (int i = 0; i < L.n; i++) ck_assert_int_eq(L.tok[i], want[i]);
  TOK(0, IDENT, 4, 1);
  TOK(4, IDENT, 5, 3);
  TOK(8, INT, 6, 2);
  TOK(12, IDENT, 10, 1);
}
END_TEST

START_TEST(operators_and_keywords) {
  Lexed L;
  lex(&L, "== != <= >= -> ... .. < > import const mesh def model train param return for in as "
          "if else and or not true false");
  int want[] = {EQ, NE, LE, GE, ARROW, ELLIPSIS, DOTDOT, '<', '>', IMPORT, CONST, MESH, DEF,
                MODEL, TRAIN, PARAM, RETURN, FOR, IN, AS, IF, ELSE, AND, OR, NOT, TRUE, FALSE};
  ck_assert_int_eq(L.n, (int)(sizeof want / sizeof *want));
  for (int i = 0; i < L.n; i++) ck_assert_int_eq(L.tok[i], want[i]);
}
END_TEST

START_TEST(strings) {
  Lexed L;
  lex(&L, "\"a\\n\\\"b\\\\\" \"h\xc3\xa9\" \"\"");
  ck_assert_int_eq(L.n, 3);
  TOK(0, STRING, 1, 1);
  ck_assert_str_eq(L.val[0].s, "a\n\"b\\");
  ck_assert_str_eq(L.val[1].s, "h\xc3\xa9");
  ck_assert_str_eq(L.val[2].s, "");
  ck_assert_int_eq(L.nerrors, 0);
}
END_TEST

START_TEST(error_bad_character) {
  Lexed L;
  lex(&L, "a $ b");
  ck_assert_int_eq(L.n, 2);
  ck_assert_int_eq(L.nerrors, 1);
  ck_assert_str_eq(L.errs, "t.mpl:1:3: error: unexpected character '$'\na $ b\n  ^\n");
}
END_TEST

START_TEST(error_integer_overflow) {
  Lexed L;
  lex(&L, "x = 99999999999999999999");
  ck_assert_int_eq(L.n, 3);
  ck_assert_int_eq(L.nerrors, 1);
  ck_assert_ptr_nonnull(strstr(L.errs, "t.mpl:1:5: error: integer literal 99999999999999999999 is too large"));
  lex(&L, "9223372036854775807");
  ck_assert_int_eq(L.nerrors, 0);
  ck_assert(L.val[0].i == INT64_MAX);
}
END_TEST

START_TEST(error_strings) {
  Lexed L;
  lex(&L, "\"ab\\q\"\n\"open");
  ck_assert_int_eq(L.nerrors, 2);
  ck_assert_ptr_nonnull(strstr(L.errs, "t.mpl:1:4: error: unknown escape '\\q'"));
  ck_assert_ptr_nonnull(strstr(L.errs, "t.mpl:2:1: error: unterminated string"));
  ck_assert_int_eq(L.tok[L.n - 1], STRING);
  ck_assert_str_eq(L.val[L.n - 1].s, "open");
}
END_TEST

START_TEST(error_bytes) {
  Lexed L;
  const char text[] = "a\0b \xff \xc3\xa9 c";
  lex_text(&L, text, sizeof text - 1);
  ck_assert_int_eq(L.n, 3);
  ck_assert_int_eq(L.nerrors, 3);
  ck_assert_ptr_nonnull(strstr(L.errs, "t.mpl:1:2: error: unexpected NUL byte"));
  ck_assert_ptr_nonnull(strstr(L.errs, "t.mpl:1:5: error: invalid UTF-8 byte 0xff"));
  ck_assert_ptr_nonnull(strstr(L.errs, "t.mpl:1:7: error: non-ASCII character"));
  TOK(2, IDENT, 1, 10);
}
END_TEST

START_TEST(nesting_limit) {
  Lexed L;
  char *text = malloc(100001);
  memset(text, '(', 100000);
  text[100000] = 0;
  lex(&L, text);
  ck_assert_int_eq(L.nerrors, 1);
  ck_assert_ptr_nonnull(strstr(L.errs, "nested too deeply"));
  free(text);
}
END_TEST

static Suite *lexer_suite(void) {
  Suite *s = suite_create("lexer");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, range_not_float);
  tcase_add_test(tc, columns_after_tabs);
  tcase_add_test(tc, numbers_and_words);
  tcase_add_test(tc, leading_zeros_decimal);
  tcase_add_test(tc, annotations_vs_matmul);
  tcase_add_test(tc, newlines_in_brackets);
  tcase_add_test(tc, operators_and_keywords);
  tcase_add_test(tc, strings);
  tcase_add_test(tc, error_bad_character);
  tcase_add_test(tc, error_integer_overflow);
  tcase_add_test(tc, error_strings);
  tcase_add_test(tc, error_bytes);
  tcase_add_test(tc, nesting_limit);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(lexer_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
