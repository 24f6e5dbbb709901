/*
 * parse.c — the entry point of the front end: runs the scanner and the parser
 * over one file's text and returns its PROGRAM node.
 *
 * Invariants:
 *  - Each call has its own ParseCtx and scanner; nothing is shared between
 *    calls, so two compilations in one process do not interfere.
 *  - The result is never NULL: a PROGRAM with the items read before the
 *    parse stopped; the errors are in the Diag.
 *  - The text is registered with the Diag (once) so that errors show its lines.
 */
#include "parse_int.h"
#include "parser.h"
#include "lexer.h"

#include <limits.h>
#include <string.h>

/* Registers (path, text) with the Diag unless that exact text is already there. */
static void parse_register(Diag *d, const char *path, const char *text, size_t len) {
  for (int i = 0; i < d->files.n; i++) {
    const SourceFile *f = d->files.items[i];
    if (f->text == text && strcmp(f->path, path) == 0) return;
  }
  diag_add_file(d, path, text, len);
}

Node *parse_source(Diag *d, Arena *a, const char *path, const char *text, size_t len) {
  ParseCtx ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.diag = d;
  ctx.arena = a;
  ctx.path = path;
  ctx.line = 1;
  ctx.col = 1;
  ctx.at_stmt_start = true;
  ctx.program = node_new(a, N_PROGRAM, parse_loc(&ctx, 1, 1));
  parse_register(d, path, text, len);

  if (len > (size_t)INT_MAX - 2) {
    diag_error_noloc(d, "%s: file too large", path);
    return ctx.program;
  }
  /* a UTF-8 byte order mark (what some editors write first) is no part of the program;
     it is zero-width where a line is shown, so columns after it stay right */
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3, len -= 3;
  /* a NUL byte is no text's: a job, a data file or another binary given as the program
     (its bytes were echoed under a caret) */
  const char *nul = memchr(text, 0, len);
  if (nul) {
    bool job = len >= 6 && memcmp(text, "MPLJOB", 6) == 0;
    int line = 1, col = 1;
    for (const char *c = text; c < nul; c++) *c == '\n' ? (line++, col = 1) : col++;
    diag_error_nosource(d, parse_loc(&ctx, line, col), "not a program's text (a NUL byte)%s",
                        job ? ": it is a job; mplrun runs it" : ""); /* (no line under a caret: binary bytes) */
    return ctx.program;
  }
  yyscan_t scanner;
  if (yylex_init_extra(&ctx, &scanner) != 0) die("cannot create the scanner");
  YY_BUFFER_STATE buf = yy_scan_bytes(text, (int)len, scanner);
  yyparse(scanner, &ctx);
  yy_delete_buffer(buf, scanner);
  yylex_destroy(scanner);
  return ctx.program;
}

Node *parse_file(Diag *d, Arena *a, const char *path) {
  SourceFile *f = diag_load_file(d, path);
  if (!f) return NULL;
  return parse_source(d, a, f->path, f->text, f->len);
}
