/*
 * parser.y — the grammar of .mpl (LANGUAGE.md): tokens to the AST of ast.h.
 *
 * Invariants:
 *  - Pure parser, reentrant scanner, all state in ParseCtx; nodes live in the arena.
 *  - The grammar builds only the tree; meaning is given by later passes.
 *  - No conflicts (%expect 0): operator precedence is declared below.
 *  - Syntax errors are reported as located diagnostics; error productions at
 *    item and statement level resynchronise on a newline, ';' or '}', so
 *    several errors are reported in one run. Items are appended to
 *    ctx->program as soon as they are parsed, so a parse that stops early
 *    still returns what it read.
 *  - Every expression node tracks its tree height in its location; beyond
 *    PARSE_MAX_DEPTH it is replaced by an ERROR node, so the tree depth is bounded.
 *
 * Statements end at a newline, ';' or a closing '}'. `else` may start a new
 * line: the scanner drops the newline before it.
 */
%code requires {
#include "lang/parse_int.h"
#ifndef YY_TYPEDEF_YY_SCANNER_T
#define YY_TYPEDEF_YY_SCANNER_T
typedef void *yyscan_t;
#endif
}

%code top {
/* Locations: span from the first to the last symbol; depth is the deepest child's. */
#define YYLLOC_DEFAULT(Cur, Rhs, N)                                         \
  do {                                                                      \
    if (N) {                                                                \
      (Cur).first_line = YYRHSLOC(Rhs, 1).first_line;                       \
      (Cur).first_column = YYRHSLOC(Rhs, 1).first_column;                   \
      (Cur).last_line = YYRHSLOC(Rhs, N).last_line;                         \
      (Cur).last_column = YYRHSLOC(Rhs, N).last_column;                     \
      (Cur).depth = 0;                                                      \
      for (int yyk_ = 1; yyk_ <= (N); yyk_++)                               \
        if (YYRHSLOC(Rhs, yyk_).depth > (Cur).depth)                        \
          (Cur).depth = YYRHSLOC(Rhs, yyk_).depth;                          \
    } else {                                                                \
      (Cur).first_line = (Cur).last_line = YYRHSLOC(Rhs, 0).last_line;      \
      (Cur).first_column = (Cur).last_column = YYRHSLOC(Rhs, 0).last_column; \
      (Cur).depth = 0;                                                      \
    }                                                                       \
  } while (0)
}

%define api.pure full
%define api.location.type {ParseLoc}
%define parse.error custom
%define parse.lac full
%locations
%expect 0
%param {yyscan_t scanner}
%parse-param {ParseCtx *ctx}

%union {
  Node *node;
  NodeList list;
  const char *s;
  int64_t i;
  double f;
  int op;
}

%code {
#include "lexer.h"

#include <ctype.h>
#include <string.h>

static void yyerror(YYLTYPE *loc, yyscan_t scanner, ParseCtx *ctx, const char *msg);

#define LOC(l) parse_loc(ctx, (l).first_line, (l).first_column)
#define A (ctx->arena)

static Node *mk(ParseCtx *ctx, NodeKind k, ParseLoc l) { return node_new(A, k, LOC(l)); }

static Loc end_loc(ParseCtx *ctx, ParseLoc l) { return parse_loc(ctx, l.last_line, l.last_column); }

/* Counts one more level of expression; past the limit the node becomes ERROR. */
static Node *nest(ParseCtx *ctx, ParseLoc *l, Node *n) {
  if (++l->depth <= PARSE_MAX_DEPTH) return n;
  if (!ctx->depth_reported)
    diag_error(ctx->diag, n->loc,
               "expression too deep: more than %d levels of operations (each operator of a chain such as "
               "a + b + c is one level; split a long chain over several statements)",
               PARSE_MAX_DEPTH);
  ctx->depth_reported = true;
  l->depth = 0;
  return node_new(A, N_ERROR, n->loc);
}

static Node *mk_bin(ParseCtx *ctx, ParseLoc *l, int op, Node *a, Node *b) {
  Node *n = mk(ctx, N_BINOP, *l);
  n->op = op;
  n->a = a;
  n->b = b;
  return nest(ctx, l, n);
}

static Node *mk_un(ParseCtx *ctx, ParseLoc *l, int op, Node *a) {
  Node *n = mk(ctx, N_UNOP, *l);
  n->op = op;
  n->a = a;
  return nest(ctx, l, n);
}

static Node *mk_call(ParseCtx *ctx, ParseLoc *l, Node *callee, NodeList args) {
  Node *n = mk(ctx, N_CALL, *l);
  n->a = callee;
  n->list = args;
  return nest(ctx, l, n);
}

/* `call as NAME` / `call as NAME[index]`: names the call (the last one built). */
static Node *mk_as(ParseCtx *ctx, Node *call, const char *name, ParseLoc nl, Node *index) {
  if (call->kind != N_CALL) return call; /* an ERROR placeholder */
  call->as_name = mk(ctx, N_IDENT, nl);
  call->as_name->name = name;
  call->as_index = index;
  return call;
}

static Node *mk_named(ParseCtx *ctx, NodeKind k, ParseLoc l, const char *name) {
  Node *n = mk(ctx, k, l);
  n->name = name;
  return n;
}

static NodeList list1(ParseCtx *ctx, Node *n) {
  NodeList l = {0};
  if (n) node_list_push(A, &l, n);
  return l;
}

static NodeList list_add(ParseCtx *ctx, NodeList l, Node *n) {
  if (n) node_list_push(A, &l, n);
  return l;
}

static NodeList list_cat(ParseCtx *ctx, NodeList l, NodeList m) {
  for (int i = 0; i < m.n; i++) node_list_push(A, &l, m.items[i]);
  return l;
}

static void add_item(ParseCtx *ctx, Node *n) {
  if (n) node_list_push(A, &ctx->program->list, n);
}

/* Attaches annotations to a statement (ERROR statements take none). */
static Node *annotate(ParseCtx *ctx, Node *stmt, NodeList annots) {
  if (stmt) stmt->annots = list_cat(ctx, stmt->annots, annots);
  return stmt;
}

/* ASSIGN: every target must be a plain name. */
static Node *mk_assign(ParseCtx *ctx, ParseLoc l, NodeList targets, Node *value) {
  Node *n = mk(ctx, N_ASSIGN, l);
  for (int i = 0; i < targets.n; i++) {
    Node *t = targets.items[i];
    if (t->kind != N_IDENT && t->kind != N_ERROR)
      diag_error(ctx->diag, t->loc, "cannot assign to this expression (only to a name)");
  }
  n->list = targets;
  n->a = value;
  return n;
}

static const char *const type_names[] = {"f32", "bf16", "f16", "i32", "bool", "int", "float"};

static Node *mk_type(ParseCtx *ctx, ParseLoc l, const char *name, bool has_dims, NodeList dims) {
  bool known = false;
  for (size_t i = 0; i < sizeof type_names / sizeof *type_names; i++)
    if (strcmp(name, type_names[i]) == 0) known = true;
  if (!known)
    diag_error(ctx->diag, LOC(l), "unknown type '%s' (expected f32, bf16, f16, i32, bool, int or float)", name);
  Node *n = mk_named(ctx, N_TYPE, l, name);
  n->has_dims = has_dims;
  n->list = dims;
  return n;
}

/* `-> (t1, t2)`: a def's several result types (one in parentheses is just that type). */
static Node *mk_types(ParseCtx *ctx, ParseLoc l, NodeList types) {
  if (types.n == 1) return types.items[0];
  Node *n = mk(ctx, N_TYPES, l);
  n->list = types;
  return n;
}

/* `return v` (a: the value) or `return y, aux` (list: the values). */
static Node *mk_return(ParseCtx *ctx, ParseLoc l, NodeList values) {
  Node *n = mk(ctx, N_RETURN, l);
  if (values.n == 1) n->a = values.items[0];
  else n->list = values;
  return n;
}

static Node *mk_annot(ParseCtx *ctx, ParseLoc l, int kind, bool has_args, NodeList args) {
  static const char *const names[] = {"stage", "device", "shard", "recompute"};
  if (!has_args && kind != ANNOT_RECOMPUTE)
    diag_error(ctx->diag, LOC(l), "'@%s' needs arguments in parentheses, as in @%s(%s)", names[kind],
               names[kind], kind == ANNOT_SHARD ? "dim" : "k");
  Node *n = mk(ctx, N_ANNOT, l);
  n->op = kind;
  n->list = args;
  return n;
}

static Node *mk_body_node(ParseCtx *ctx, NodeKind k, ParseLoc l, const char *name, NodeList body,
                          ParseLoc body_loc) {
  Node *n = mk_named(ctx, k, l, name);
  n->body = body;
  n->end = end_loc(ctx, body_loc);
  return n;
}
}

%token <s> IDENT "identifier"
%token <i> INT "integer"
%token <f> FLOAT "number"
%token <s> STRING "string"
%token <op> ANNOT "annotation"
%token NEWLINE "newline"
%token IMPORT "'import'" CONST "'const'" MESH "'mesh'" DEF "'def'" MODEL "'model'"
%token TRAIN "'train'" PARAM "'param'" RETURN "'return'" FOR "'for'" IN "'in'"
%token AS "'as'" IF "'if'" ELSE "'else'" AND "'and'" OR "'or'" NOT "'not'"
%token TRUE "'true'" FALSE "'false'"
%token EQ "'=='" NE "'!='" LE "'<='" GE "'>='" ARROW "'->'"
%token DOTDOT "'..'" ELLIPSIS "'...'"

%type <node> item stmt simple if_stmt expr postfix primary arg sub dim type param_decl
%type <node> annot trainkv ret_opt
%type <list> args arglist params paramlist subs dims annots annots_opt
%type <list> block stmt_seq stmts_ne exprlist train_body trainkvs_ne typelist

/* Lowest first. AS_NAME: `call as NAME` not followed by '['. */
%precedence AS_NAME
%left OR
%left AND
%precedence NOT
%nonassoc EQ NE '<' LE '>' GE
%left '+' '-'
%left '*' '/' '%' '@'
%precedence NEG
%precedence '['

%%

program:
    sepopt
  | sepopt items sepopt
  ;

items:
    item                { add_item(ctx, $1); }
  | items seps item     { add_item(ctx, $3); }
  ;

sep: NEWLINE | ';' ;
seps: sep | seps sep ;
sepopt: %empty | seps ;

/* ---- top-level items ---------------------------------------------------- */

item:
    IMPORT IDENT                { $$ = mk_named(ctx, N_IMPORT, @$, $2); }
  | CONST IDENT '=' expr        { $$ = mk_named(ctx, N_CONST, @$, $2); $$->a = $4; }
  | MESH '(' args ')'           { $$ = mk(ctx, N_MESH, @$); $$->list = $3; }
  | DEF IDENT '(' params ')' ret_opt block
      { $$ = mk_body_node(ctx, N_DEF, @$, $2, $7, @7); $$->list = $4; $$->a = $6; }
  | MODEL IDENT '(' params ')' block
      { $$ = mk_body_node(ctx, N_MODEL, @$, $2, $6, @6); $$->list = $4; }
  | TRAIN IDENT '{' train_body '}'
      { $$ = mk_named(ctx, N_TRAIN, @$, $2); $$->list = $4; $$->end = end_loc(ctx, @5); }
  | error                       { $$ = NULL; }
  | error block                 { $$ = NULL; }
  ;

ret_opt:
    %empty                      { $$ = NULL; }
  | ARROW type                  { $$ = $2; }
  | ARROW '(' typelist ')'      { $$ = mk_types(ctx, @3, $3); }
  ;

typelist:
    type                        { $$ = list1(ctx, $1); }
  | typelist ',' type           { $$ = list_add(ctx, $1, $3); }
  ;

params:
    %empty                      { $$ = (NodeList){0}; }
  | paramlist
  | paramlist ','
  ;

paramlist:
    param_decl                  { $$ = list1(ctx, $1); }
  | paramlist ',' param_decl    { $$ = list_add(ctx, $1, $3); }
  ;

param_decl:
    IDENT ':' type              { $$ = mk_named(ctx, N_PARAMDECL, @$, $1); $$->a = $3; }
  | IDENT ':' type '=' expr     { $$ = mk_named(ctx, N_PARAMDECL, @$, $1); $$->a = $3; $$->b = $5; }
  ;

type:
    IDENT                       { $$ = mk_type(ctx, @$, $1, false, (NodeList){0}); }
  | IDENT '[' ']'               { $$ = mk_type(ctx, @$, $1, true, (NodeList){0}); }
  | IDENT '[' dims ']'          { $$ = mk_type(ctx, @$, $1, true, $3); }
  ;

dims:
    dim                         { $$ = list1(ctx, $1); }
  | dims ',' dim                { $$ = list_add(ctx, $1, $3); }
  ;

dim:
    expr
  | ELLIPSIS                    { $$ = mk(ctx, N_ELLIPSIS, @$); }
  ;

train_body:
    sepopt                      { $$ = (NodeList){0}; }
  | sepopt trainkvs_ne sepopt   { $$ = $2; }
  ;

trainkvs_ne:
    trainkv                     { $$ = list1(ctx, $1); }
  | trainkvs_ne seps trainkv    { $$ = list_add(ctx, $1, $3); }
  ;

trainkv:
    IDENT '=' expr              { $$ = mk_named(ctx, N_TRAINKV, @$, $1); $$->a = $3; }
  | error                       { $$ = NULL; yyerrok; } /* safe: see stmt */
  | error block                 { $$ = NULL; yyerrok; }
  ;

/* ---- statements ------------------------------------------------------------ */

block:
    '{' stmt_seq '}'            { $$ = $2; }
  ;

stmt_seq:
    sepopt                      { $$ = (NodeList){0}; }
  | sepopt stmts_ne sepopt      { $$ = $2; }
  ;

stmts_ne:
    stmt                        { $$ = list1(ctx, $1); }
  | stmts_ne seps stmt          { $$ = list_add(ctx, $1, $3); }
  ;

stmt:
    simple annots_opt           { $$ = annotate(ctx, $1, $2); }
  | if_stmt annots_opt          { $$ = annotate(ctx, $1, $2); }
  | FOR IDENT IN expr DOTDOT expr annots_opt block annots_opt
      {
        $$ = mk_body_node(ctx, N_FOR, @$, $2, $8, @8);
        $$->a = $4;
        $$->b = $6;
        annotate(ctx, $$, list_cat(ctx, $7, $9));
      }
  | annots_opt block annots_opt
      {
        $$ = mk_body_node(ctx, N_BLOCK, $1.n ? @1 : @2, NULL, $2, @2);
        annotate(ctx, $$, list_cat(ctx, $1, $3));
      }
  /* a def inside a def or a model: parsed whole, so the error is one and the body goes on
     (pass 83: a syntax error whose recovery closed the outer body, and a second error at its
     next statement) */
  | DEF IDENT '(' params ')' ret_opt block
      {
        diag_error(ctx->diag, LOC(@1), "a def goes at the top level of the file, not inside a def or a model");
        $$ = NULL;
      }
  | MODEL IDENT '(' params ')' block
      {
        diag_error(ctx->diag, LOC(@1), "a model goes at the top level of the file, not inside a def or a model");
        $$ = NULL;
      }
  /* yyerrok is safe: after `error` the parser needs a lookahead ('{' or not),
     so it discards tokens before reducing, and always makes progress. (A lone
     `error` alternative would reduce at once and loop on the same token.) */
  | error                       { $$ = NULL; yyerrok; }
  | error block                 { $$ = NULL; yyerrok; }
  ;

simple:
    expr                        { $$ = mk(ctx, N_EXPRSTMT, @$); $$->a = $1; }
  | exprlist '=' expr           { $$ = mk_assign(ctx, @$, $1, $3); }
  | PARAM IDENT ':' type '=' expr
      { $$ = mk_named(ctx, N_PARAM, @$, $2); $$->a = $4; $$->b = $6; }
  | PARAM IDENT ':' type '=' expr IF expr
      { $$ = mk_named(ctx, N_PARAM, @$, $2); $$->a = $4; $$->b = $6; $$->c = $8; }
  | RETURN exprlist             { $$ = mk_return(ctx, @$, $2); }
  ;

exprlist:
    expr                        { $$ = list1(ctx, $1); }
  | exprlist ',' expr           { $$ = list_add(ctx, $1, $3); }
  ;

if_stmt:
    IF expr block
      { $$ = mk_body_node(ctx, N_IF, @$, NULL, $3, @3); $$->a = $2; }
  | IF expr block ELSE block
      { $$ = mk_body_node(ctx, N_IF, @$, NULL, $3, @3); $$->a = $2; $$->else_body = $5; }
  | IF expr block ELSE if_stmt
      { $$ = mk_body_node(ctx, N_IF, @$, NULL, $3, @3); $$->a = $2; $$->else_body = list1(ctx, $5); }
  ;

annots_opt:
    %empty                      { $$ = (NodeList){0}; }
  | annots
  ;

annots:
    annot                       { $$ = list1(ctx, $1); }
  | annots annot                { $$ = list_add(ctx, $1, $2); }
  ;

annot:
    ANNOT                       { $$ = mk_annot(ctx, @$, $1, false, (NodeList){0}); }
  | ANNOT '(' args ')'          { $$ = mk_annot(ctx, @$, $1, true, $3); }
  ;

/* ---- expressions ----------------------------------------------------------- */

expr:
    postfix
  | expr OR expr                { $$ = mk_bin(ctx, &@$, BOP_OR, $1, $3); }
  | expr AND expr               { $$ = mk_bin(ctx, &@$, BOP_AND, $1, $3); }
  | NOT expr                    { $$ = mk_un(ctx, &@$, UOP_NOT, $2); }
  | expr EQ expr                { $$ = mk_bin(ctx, &@$, BOP_EQ, $1, $3); }
  | expr NE expr                { $$ = mk_bin(ctx, &@$, BOP_NE, $1, $3); }
  | expr '<' expr               { $$ = mk_bin(ctx, &@$, BOP_LT, $1, $3); }
  | expr LE expr                { $$ = mk_bin(ctx, &@$, BOP_LE, $1, $3); }
  | expr '>' expr               { $$ = mk_bin(ctx, &@$, BOP_GT, $1, $3); }
  | expr GE expr                { $$ = mk_bin(ctx, &@$, BOP_GE, $1, $3); }
  | expr '+' expr               { $$ = mk_bin(ctx, &@$, BOP_ADD, $1, $3); }
  | expr '-' expr               { $$ = mk_bin(ctx, &@$, BOP_SUB, $1, $3); }
  | expr '*' expr               { $$ = mk_bin(ctx, &@$, BOP_MUL, $1, $3); }
  | expr '/' expr               { $$ = mk_bin(ctx, &@$, BOP_DIV, $1, $3); }
  | expr '%' expr               { $$ = mk_bin(ctx, &@$, BOP_MOD, $1, $3); }
  | expr '@' expr               { $$ = mk_bin(ctx, &@$, BOP_MATMUL, $1, $3); }
  | '-' expr %prec NEG          { $$ = mk_un(ctx, &@$, UOP_NEG, $2); }
  ;

postfix:
    primary
  | postfix '(' args ')'        { $$ = mk_call(ctx, &@$, $1, $3); }
  | postfix '(' args ')' AS IDENT %prec AS_NAME
      { $$ = mk_as(ctx, mk_call(ctx, &@$, $1, $3), $6, @6, NULL); }
  | postfix '(' args ')' AS IDENT '[' expr ']'
      { $$ = mk_as(ctx, mk_call(ctx, &@$, $1, $3), $6, @6, $8); }
  | postfix '[' subs ']'
      { Node *n = mk(ctx, N_INDEX, @$); n->a = $1; n->list = $3; $$ = nest(ctx, &@$, n);
        /* f(x) as h[i][j] would index f's result by j, a trap (pass 87): refused unless the
           named call is in parentheses, (f(x) as h[i])[j], which @1 then starts before */
        Loc at = LOC(@1);
        if ($1->kind == N_CALL && $1->as_index && at.line == $1->loc.line && at.col == $1->loc.col)
          diag_error(ctx->diag, LOC(@2), "an instance name takes one index ('as %s[i * n + j]' with n the inner "
                     "loop's count); to index the call's result, write (f(...) as %s[i])[...]",
                     $1->as_name->name, $1->as_name->name); }
  | postfix '.' IDENT
      { Node *n = mk_named(ctx, N_MEMBER, @$, $3); n->a = $1; $$ = nest(ctx, &@$, n); }
  ;

primary:
    IDENT                       { $$ = mk_named(ctx, N_IDENT, @$, $1); }
  | INT                         { $$ = mk(ctx, N_INT, @$); $$->ival = $1; }
  | FLOAT                       { $$ = mk(ctx, N_FLOAT, @$); $$->fval = $1; }
  | STRING                      { $$ = mk(ctx, N_STRING, @$); $$->sval = $1; }
  | TRUE                        { $$ = mk(ctx, N_BOOL, @$); $$->ival = 1; }
  | FALSE                       { $$ = mk(ctx, N_BOOL, @$); $$->ival = 0; }
  | '(' expr ')'                { $$ = $2; }
  ;

args:
    %empty                      { $$ = (NodeList){0}; }
  | arglist
  | arglist ','
  ;

arglist:
    arg                         { $$ = list1(ctx, $1); }
  | arglist ',' arg             { $$ = list_add(ctx, $1, $3); }
  ;

arg:
    expr                        { $$ = mk(ctx, N_ARG, @$); $$->a = $1; }
  | IDENT '=' expr              { $$ = mk_named(ctx, N_ARG, @$, $1); $$->a = $3; }
  ;

subs:
    sub                         { $$ = list1(ctx, $1); }
  | subs ',' sub                { $$ = list_add(ctx, $1, $3); }
  ;

sub:
    expr
  | ELLIPSIS                    { $$ = mk(ctx, N_ELLIPSIS, @$); }
  | expr ':' expr               { $$ = mk(ctx, N_SLICE, @$); $$->a = $1; $$->b = $3; }
  | expr ':'                    { $$ = mk(ctx, N_SLICE, @$); $$->a = $1; }
  | ':' expr                    { $$ = mk(ctx, N_SLICE, @$); $$->b = $2; }
  | ':'                         { $$ = mk(ctx, N_SLICE, @$); }
  ;

%%

/* ---- syntax error messages ----------------------------------------------------- */

/* The innermost open bracket whose closer is `closer`, or NULL. */
static const Bracket *open_bracket(const ParseCtx *ctx, char closer) {
  char open = closer == ')' ? '(' : closer == ']' ? '[' : closer == '}' ? '{' : 0;
  for (int i = ctx->nbrackets - 1; i >= 0; i--)
    if (!open || ctx->brackets[i].ch == open) return &ctx->brackets[i];
  return NULL;
}

/* "identifier 'x'", "integer 3", "'('", "end of file": the unexpected token. */
static void describe_token(const ParseCtx *ctx, yysymbol_kind_t t, char *buf, size_t n) {
  switch (t) {
  case YYSYMBOL_IDENT: snprintf(buf, n, "identifier '%s'", ctx->last_text); break;
  case YYSYMBOL_INT: snprintf(buf, n, "integer %s", ctx->last_text); break;
  case YYSYMBOL_FLOAT: snprintf(buf, n, "number %s", ctx->last_text); break;
  case YYSYMBOL_ANNOT: snprintf(buf, n, "'%s'", ctx->last_text); break;
  default: snprintf(buf, n, "%s", yysymbol_name(t));
  }
}

static bool sym_is(yysymbol_kind_t t, const char *name) { return strcmp(yysymbol_name(t), name) == 0; }

static bool starts_expr(yysymbol_kind_t t) {
  switch (t) {
  case YYSYMBOL_IDENT: case YYSYMBOL_INT: case YYSYMBOL_FLOAT: case YYSYMBOL_STRING:
  case YYSYMBOL_TRUE: case YYSYMBOL_FALSE: case YYSYMBOL_NOT:
    return true;
  default:
    return sym_is(t, "'-'") || sym_is(t, "'('");
  }
}

/* ", expecting A, B or C" when the list is short; expression starters read "expression". */
static void describe_expected(const yypcontext_t *yyctx, char *buf, size_t n) {
  yysymbol_kind_t exp[YYNTOKENS];
  int m = yypcontext_expected_tokens(yyctx, exp, YYNTOKENS);
  bool item = false, stmt = false, close = false;
  for (int i = 0; i < m; i++) {
    item |= exp[i] == YYSYMBOL_IMPORT;
    stmt |= exp[i] == YYSYMBOL_RETURN;
    close |= sym_is(exp[i], "'}'");
  }
  if (item) {
    snprintf(buf, n, ", expecting 'import', 'const', 'mesh', 'def', 'model' or 'train'");
    return;
  }
  if (stmt) {
    snprintf(buf, n, ", expecting a statement%s", close ? " or '}'" : "");
    return;
  }
  const char *names[YYNTOKENS + 1];
  int k = 0;
  /* an integer can come: an expression; only a name can (import 3, x.3, as 3): a name */
  bool expr = false, ident = false;
  for (int i = 0; i < m; i++) {
    expr |= exp[i] == YYSYMBOL_INT;
    ident |= exp[i] == YYSYMBOL_IDENT;
  }
  for (int i = 0; i < m; i++) {
    if (exp[i] == YYSYMBOL_IDENT || exp[i] == YYSYMBOL_INT || (starts_expr(exp[i]) && expr))
      continue;
    names[k++] = yysymbol_name(exp[i]);
  }
  if (ident && !expr) {
    memmove(names + 1, names, sizeof(*names) * (size_t)k);
    names[0] = "a name";
    k++;
  }
  if (expr) {
    memmove(names + 1, names, sizeof(*names) * (size_t)k);
    names[0] = "expression";
    k++;
  }
  buf[0] = 0;
  if (m <= 0 || k > 5) return;
  size_t len = 0;
  for (int i = 0; i < k && len < n; i++) {
    const char *pre = i == 0 ? ", expecting " : i == k - 1 ? " or " : ", ";
    len += (size_t)snprintf(buf + len, n - len, "%s%s", pre, names[i]);
  }
}

/*
 * After an error at end of file, at a closer where another closer was
 * expected, or inside a '(' or '[' opened on an earlier line: "to match this
 * '('" at the open bracket.
 */
static void note_unclosed(ParseCtx *ctx, const yypcontext_t *yyctx, yysymbol_kind_t t) {
  const Bracket *b = open_bracket(ctx, 0);
  if (t != YYSYMBOL_YYEOF && !ctx->has_orphan && ctx->paren_depth > 0 &&
      b->line < yypcontext_location(yyctx)->first_line) {
    /* a '(' left open on an earlier line swallowed the newlines since */
    diag_note(ctx->diag, parse_loc(ctx, b->line, b->col), "to match this '%c'", b->ch);
    return;
  }
  if (t != YYSYMBOL_YYEOF) b = ctx->has_orphan ? &ctx->orphan : NULL;
  if (!b) return;
  if (t != YYSYMBOL_YYEOF) {
    if (!sym_is(t, "')'") && !sym_is(t, "']'") && !sym_is(t, "'}'")) return;
    const char *want = b->ch == '(' ? "')'" : b->ch == '[' ? "']'" : "'}'";
    if (sym_is(t, want)) return;
    yysymbol_kind_t exp[YYNTOKENS];
    int m = yypcontext_expected_tokens(yyctx, exp, YYNTOKENS);
    bool expected = false;
    for (int i = 0; i < m; i++) expected |= sym_is(exp[i], want);
    if (!expected) return;
  }
  diag_note(ctx->diag, parse_loc(ctx, b->line, b->col), "to match this '%c'", b->ch);
}

/* The text of line `line` of the file being parsed (not NUL-terminated: *len bytes), or NULL. */
static const char *source_line(const ParseCtx *ctx, int line, size_t *len) {
  const SourceFile *f = NULL;
  for (int i = ctx->diag->files.n - 1; i >= 0 && !f; i--) {
    const SourceFile *g = ctx->diag->files.items[i];
    if (strcmp(g->path, ctx->path) == 0) f = g;
  }
  if (!f) return NULL;
  const char *s = f->text, *end = f->text + f->len;
  if (f->len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3; /* a byte order mark: no column (parse_source) */
  for (int k = 1; k < line && s < end; k++) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    s = nl ? nl + 1 : end;
  }
  const char *nl = memchr(s, '\n', (size_t)(end - s));
  *len = (size_t)((nl ? nl : end) - s);
  return s;
}

/* A hint for what a Python (PyTorch) habit looks like to this grammar: "; write ..." after
 * the error, or "" (pass 71: `x ** 2` said "unexpected '*', expecting expression"). */
static const char *python_hint(const ParseCtx *ctx, yysymbol_kind_t t, int line, int col) {
  size_t len;
  const char *s = source_line(ctx, line, &len);
  if (!s || col < 1 || (size_t)col > len + 1) return "";
  size_t at = (size_t)col - 1, b = at, lead = 0;
  while (b > 0 && (s[b - 1] == ' ' || s[b - 1] == '\t')) b--;
  while (lead < len && (s[lead] == ' ' || s[lead] == '\t')) lead++;
  char before = b > 0 ? s[b - 1] : 0;
  bool def = len - lead > 4 && !strncmp(s + lead, "def ", 4);
  bool block = (len - lead > 3 && (!strncmp(s + lead, "if ", 3) || !strncmp(s + lead, "for ", 4))) ||
               (len - lead >= 4 && !strncmp(s + lead, "else", 4));
  if (sym_is(t, "'*'") && before == '*') return "; '**' is no operator: write pow(x, 2)";
  if (sym_is(t, "'/'") && before == '/') return "; '//' is no operator: '/' of two i32 values divides toward zero";
  if (sym_is(t, "'='") && before && strchr("+-*/", before) && at == b)
    return "; there is no compound assignment: write x = x + y";
  if (def && (sym_is(t, "')'") || sym_is(t, "','") || sym_is(t, "':'")))
    return "; each argument of a def has a type (x: f32[B, n], k: int) and its body is { ... }, not ':'";
  if (block && sym_is(t, "':'")) return "; a block is { ... }, not ':'";
  if (before == '.') { /* 1_000.5: the word 1_000, then '.' (pass 84) */
    size_t w = b - 1, under = 0;
    while (w > 0 && (isdigit((unsigned char)s[w - 1]) || s[w - 1] == '_')) under += s[--w] == '_';
    if (under && w < b - 1 && isdigit((unsigned char)s[w]) && (w == 0 || !(isalnum((unsigned char)s[w - 1]) || s[w - 1] == '_')))
      return "; a number is written without '_' (1000.5, not 1_000.5)";
  }
  bool range = false;
  for (size_t i = 0; i + 6 <= len && !range; i++) range = !strncmp(s + i, "range(", 6);
  if (len - lead > 4 && !strncmp(s + lead, "for ", 4) && range)
    return "; a loop counts over a range a..b: for i in 0..3 { ... }";
  if (t == YYSYMBOL_IDENT && !strcmp(ctx->last_text, "elif")) return "; write else if";
  if (t == YYSYMBOL_IF && len - lead > 6 && !strncmp(s + lead, "param ", 6)) /* pass 87 */
    return "; a param's 'if COND' comes before its annotations: param w: f32[n] = zeros if cond @shard(0)";
  if (t == YYSYMBOL_IDENT && !strcmp(ctx->last_text, "from") && at == lead)
    return "; a module is imported whole (import nn) and its defs named nn.NAME";
  if (t == YYSYMBOL_AS && len - lead > 7 && !strncmp(s + lead, "import ", 7))
    return "; a module keeps its name (import nn), its defs named nn.NAME";
  return "";
}

static int yyreport_syntax_error(const yypcontext_t *yyctx, yyscan_t scanner, ParseCtx *ctx) {
  (void)scanner;
  yysymbol_kind_t t = yypcontext_token(yyctx);
  if (t == YYSYMBOL_YYEOF && ctx->stopped) return 0; /* the scanner stopped and said why */
  const YYLTYPE *l = yypcontext_location(yyctx);
  char what[96], expected[256];
  describe_token(ctx, t, what, sizeof what);
  describe_expected(yyctx, expected, sizeof expected);
  diag_error(ctx->diag, LOC(*l), "unexpected %s%s%s", what, expected, python_hint(ctx, t, l->first_line, l->first_column));
  note_unclosed(ctx, yyctx, t);
  return 0;
}

static void yyerror(YYLTYPE *loc, yyscan_t scanner, ParseCtx *ctx, const char *msg) {
  (void)scanner;
  if (strcmp(msg, "memory exhausted") == 0)
    diag_error(ctx->diag, LOC(*loc), "program nested too deeply (parser stack exhausted)");
  else
    diag_error(ctx->diag, LOC(*loc), "%s", msg);
}
