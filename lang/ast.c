/*
 * ast.c — building the tree (node_new, node_list_push), names of kinds and
 * operators, and ast_dump (`mplc --emit=ast`).
 *
 * Invariants:
 *  - ast_dump is stable and deterministic (no pointers; floats in the shortest
 *    form that reads back exactly), one node per line, "@line:col" at the end,
 *    children indented by two spaces, labelled where the role is not obvious.
 *  - The tree depth is bounded by the parser (PARSE_MAX_DEPTH), so the
 *    recursion here is bounded too.
 */
#include "ast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

Node *node_new(Arena *a, NodeKind k, Loc loc) {
  Node *n = arena_alloc(a, sizeof *n);
  n->kind = k;
  n->loc = loc;
  return n;
}

void node_list_push(Arena *a, NodeList *l, Node *n) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 4;
    Node **items = arena_alloc(a, sizeof(Node *) * (size_t)cap);
    if (l->n) memcpy(items, l->items, sizeof(Node *) * (size_t)l->n);
    l->items = items;
    l->cap = cap;
  }
  l->items[l->n++] = n;
}

static const char *const node_kind_names[] = {
#define X(k) #k,
    NODE_KINDS(X)
#undef X
};

const char *node_kind_name(NodeKind k) {
  if ((unsigned)k >= N__COUNT) die("bad node kind %d", (int)k);
  return node_kind_names[k];
}

/* ORDER: BinOp in ast.h. */
static const char *const binop_names[] = {
    "+", "-", "*", "/", "%", "@", "==", "!=", "<", "<=", ">", ">=", "and", "or",
};

const char *binop_str(BinOp op) {
  if ((unsigned)op >= sizeof binop_names / sizeof *binop_names) die("bad binary operator %d", (int)op);
  return binop_names[op];
}

/* ---- ast_dump -------------------------------------------------------------- */

/* Labels of the child fields per kind; NULL prints the child unlabelled. */
typedef struct DumpLabels {
  const char *a, *b, *c, *list, *body, *else_body;
} DumpLabels;

static const DumpLabels dump_labels[N__COUNT] = {
    [N_DEF] = {.a = "returns", .list = "params", .body = "body"},
    [N_MODEL] = {.list = "inputs", .body = "body"},
    [N_PARAMDECL] = {.b = "default"},
    [N_ASSIGN] = {.list = "targets", .a = "value"},
    [N_PARAM] = {.b = "init", .c = "if"},
    [N_FOR] = {.a = "from", .b = "to", .body = "body"},
    [N_IF] = {.a = "cond", .body = "then", .else_body = "else"},
    [N_CALL] = {.a = "callee", .list = "args"},
    [N_SLICE] = {.a = "start", .b = "end"},
    [N_INDEX] = {.list = "subscripts"},
    [N_RETURN] = {.list = "values"},
};

/* The shortest %g form that reads back as the same double. */
static void dump_float(FILE *out, double v) {
  if (isinf(v)) {
    fputs(v < 0 ? "-inf" : "inf", out);
    return;
  }
  if (isnan(v)) {
    fputs("nan", out);
    return;
  }
  char buf[48];
  int prec = 1;
  for (; prec < 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  /* 1500, not 1.5e+03: print all integer digits while below 1e17 */
  int exp10 = v == 0 ? 0 : (int)floor(log10(fabs(v)));
  if (exp10 >= prec && exp10 < 17) prec = exp10 + 1;
  snprintf(buf, sizeof buf, "%.*g", prec, v);
  fputs(buf, out);
}

/* s quoted as a string literal writes it (\\, \", \n, \t, \r escaped; another control byte as
 * \xNN, which no literal holds: shown, not read back). */
void ast_dump_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", out); break;
    case '\\': fputs("\\\\", out); break;
    case '\n': fputs("\\n", out); break;
    case '\t': fputs("\\t", out); break;
    case '\r': fputs("\\r", out); break;
    default:
      if (*p < 0x20 || *p == 0x7f) fprintf(out, "\\x%02x", *p);
      else fputc(*p, out);
    }
  }
  fputc('"', out);
}

static const char *const annot_names[] = {"@stage", "@device", "@shard", "@recompute"};

/* The fields on a node's own line, after its kind. */
static void dump_head(FILE *out, const Node *n) {
  fputs(node_kind_name(n->kind), out);
  switch (n->kind) {
  case N_INT: fprintf(out, " %lld", (long long)n->ival); break;
  case N_FLOAT: fputc(' ', out); dump_float(out, n->fval); break;
  case N_BOOL: fputs(n->ival ? " true" : " false", out); break;
  case N_STRING: fputc(' ', out); ast_dump_string(out, n->sval); break;
  case N_BINOP: fprintf(out, " %s", binop_str((BinOp)n->op)); break;
  case N_UNOP: fputs(n->op == UOP_NOT ? " not" : " -", out); break;
  case N_ANNOT:
    fprintf(out, " %s", (unsigned)n->op < 4 ? annot_names[n->op] : "?");
    break;
  case N_TYPE: fprintf(out, " %s%s", n->name ? n->name : "?", n->has_dims ? "[]" : ""); break;
  default:
    if (n->name) fprintf(out, " %s", n->name);
  }
  if (n->kind == N_CALL && n->as_name) fprintf(out, " as %s", n->as_name->name);
  fprintf(out, " @%d:%d\n", n->loc.line, n->loc.col);
}

static void dump_node(FILE *out, const Node *n, int indent, const char *label);

static void dump_list(FILE *out, const NodeList *l, int indent, const char *label) {
  if (l->n == 0) return;
  if (label) {
    fprintf(out, "%*s%s:\n", indent, "", label);
    indent += 2;
  }
  for (int i = 0; i < l->n; i++) dump_node(out, l->items[i], indent, NULL);
}

static void dump_node(FILE *out, const Node *n, int indent, const char *label) {
  fprintf(out, "%*s", indent, "");
  if (label) fprintf(out, "%s: ", label);
  if (!n) {
    fputs("(null)\n", out);
    return;
  }
  dump_head(out, n);
  const DumpLabels *lb = &dump_labels[n->kind];
  int in = indent + 2;
  dump_list(out, &n->annots, in, NULL);
  if (n->kind == N_CALL) {
    dump_node(out, n->a, in, lb->a);
    if (n->as_index) dump_node(out, n->as_index, in, "as-index");
    dump_list(out, &n->list, in, NULL);
    return;
  }
  bool list_first = n->kind == N_ASSIGN || n->kind == N_DEF; /* targets, params */
  if (list_first) dump_list(out, &n->list, in, lb->list);
  if (n->a) dump_node(out, n->a, in, lb->a);
  if (!list_first) dump_list(out, &n->list, in, lb->list);
  if (n->b) dump_node(out, n->b, in, lb->b);
  if (n->c) dump_node(out, n->c, in, lb->c);
  dump_list(out, &n->body, in, lb->body);
  dump_list(out, &n->else_body, in, lb->else_body);
}

void ast_dump(FILE *out, const Node *n) { dump_node(out, n, 0, NULL); }
