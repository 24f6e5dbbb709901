/*
 * parse_int.h — private to the lexer (lexer.l), the parser (parser.y) and
 * parse.c: the scanner/parser context and the location type of the grammar.
 *
 * Invariants:
 *  - One ParseCtx per parse, passed to the reentrant scanner (as its extra)
 *    and to the pure parser; there is no global state.
 *  - The scanner keeps a stack of the open brackets; a newline ends a
 *    statement only when no '(' or '[' is open above the innermost '{'.
 *  - Nesting (brackets, expression trees) is capped at PARSE_MAX_DEPTH so that
 *    recursive passes over the tree can never overflow the C stack.
 */
#ifndef MPL_PARSE_INT_H
#define MPL_PARSE_INT_H

#include "ast.h"

enum { PARSE_MAX_DEPTH = 200 };

/* Bison's location of a symbol, plus the height of the expression tree it built. */
typedef struct ParseLoc {
  int first_line, first_column;
  int last_line, last_column;
  int depth;
} ParseLoc;

/* An open '(' '[' or '{' and where it is, for "to match this" notes. */
typedef struct Bracket {
  char ch;
  int line, col;
} Bracket;

typedef struct ParseCtx {
  Diag *diag;
  Arena *arena;
  const char *path;
  int line, col;          /* position of the next byte to scan (1-based) */
  Bracket *brackets;      /* open brackets, innermost last */
  int nbrackets, capbrackets;
  int paren_depth;        /* '(' and '[' open above the innermost '{' */
  Bracket orphan;         /* an opener the last closer popped unmatched ('(' before '}') */
  bool has_orphan;
  bool at_stmt_start;     /* nothing or a NEWLINE was the last token */
  bool stopped;           /* a fatal scanner error: the scanner returns end of file */
  bool depth_reported;    /* "nested too deeply" was said once */
  char last_text[48];     /* spelling of the last token, for messages */
  Node *program;          /* items are appended as they are parsed */
} ParseCtx;

static inline Loc parse_loc(const ParseCtx *ctx, int line, int col) {
  Loc l = {ctx->path, line, col};
  return l;
}

#endif
