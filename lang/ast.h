/*
 * ast.h — the abstract syntax tree of an .mpl program, the arena it lives in,
 * and diagnostics with source locations.
 *
 * Invariants:
 *  - Every Node carries the file, line and column (1-based) where it starts.
 *  - The grammar builds only this tree; every meaning is given by later passes.
 *  - All nodes and strings of one compilation live in one Arena and are freed at once.
 *  - No global mutable state: a Diag and an Arena are passed explicitly.
 */
#ifndef MPL_AST_H
#define MPL_AST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- arena.c: one bump allocator per compilation -------------------- */
typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
  ArenaBlock *head;
} Arena;

void arena_init(Arena *a);
void arena_free(Arena *a);
void *arena_alloc(Arena *a, size_t n);        /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A growable array of pointers allocated in an arena. */
typedef struct PtrVec {
  void **items;
  int n, cap;
} PtrVec;
void vec_push(Arena *a, PtrVec *v, void *p);

/* Internal bug: report with file and line and abort. Never for user errors. */
_Noreturn void mpl_die(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define die(...) mpl_die(__FILE__, __LINE__, __VA_ARGS__)

/* ---- diag.c: user-facing diagnostics --------------------------------- */
typedef struct Loc {
  const char *file; /* path as given (or as found for imports) */
  int line, col;    /* 1-based; line 0 means "no location" */
} Loc;

typedef struct SourceFile {
  const char *path;
  const char *text; /* NUL-terminated contents */
  size_t len;
} SourceFile;

/*
 * A diagnostics sink. Errors are counted, not fatal: passes keep going so that
 * several independent errors are reported in one run. After max_errors (default
 * 50) further errors are dropped and one line says so.
 */
typedef struct Diag {
  Arena *arena;
  FILE *out; /* stderr by default */
  PtrVec files; /* SourceFile*, to print the source line of a location */
  int nerrors;
  int max_errors;
  bool last_error_dropped; /* notes after a dropped error are dropped too */
} Diag;

void diag_init(Diag *d, Arena *a, FILE *out);
/* Registers text as the contents of path (the Diag keeps the pointer). */
SourceFile *diag_add_file(Diag *d, const char *path, const char *text, size_t len);
/* Reads a file and registers it; returns NULL (no diagnostic) if it cannot. */
SourceFile *diag_load_file(Diag *d, const char *path);
/* "file:line:col: error: msg", the source line, and a caret under col. */
void diag_error(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "file:line:col: warning: msg" with line and caret; not an error (the compile goes on). */
void diag_warning(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "file:line:col: note: msg" with line and caret: the other place involved. */
void diag_note(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Do a and b name the same place (same file by name, line and column)? */
bool loc_same(Loc a, Loc b);
/* "file:line:col: error: msg" without the source line (a file that is not text). */
void diag_error_nosource(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An error with no source location: "mplc: error: msg". */
void diag_error_noloc(Diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the tree -------------------------------------------------------- */

/* ORDER: ast.c's node_kind_name table follows this list. */
#define NODE_KINDS(X)                                                          \
  /* top level */                                                              \
  X(PROGRAM)  /* list: items */                                                \
  X(IMPORT)   /* name: module */                                               \
  X(CONST)    /* name, a: value */                                             \
  X(MESH)     /* list: ARG nodes (keyword args) */                             \
  X(DEF)      /* name, list: PARAMDECLs, a: return TYPE, TYPES or NULL, body */\
  X(MODEL)    /* name, list: PARAMDECLs, body */                               \
  X(TRAIN)    /* name (model), list: TRAINKV */                                \
  X(TRAINKV)  /* name (key), a: value expr */                                  \
  X(PARAMDECL)/* name, a: TYPE, b: default value or NULL */                    \
  X(TYPE)     /* name: "f32" "bf16" "f16" "i32" "bool" "int" "float";          \
                 list: dims (exprs or ELLIPSIS), has_dims: written with [] */  \
  X(TYPES)    /* list: TYPEs, a def's several results `-> (t1, t2)` */        \
  /* statements (each may carry annots) */                                     \
  X(ASSIGN)   /* list: targets (IDENT nodes), a: value */                      \
  X(PARAM)    /* name, a: TYPE, b: init expr, c: `if` condition or NULL */     \
  X(RETURN)   /* a: value, or list: the values of `return y, aux` */        \
  X(FOR)      /* name: loop var, a: lo, b: hi, body */                         \
  X(IF)       /* a: condition, body: then, else_body: else (may be empty) */   \
  X(BLOCK)    /* body: statements; annots apply to all of them */              \
  X(EXPRSTMT) /* a: expression evaluated for its effect (a call) */            \
  X(ANNOT)    /* op: ANNOT_STAGE/DEVICE/SHARD/RECOMPUTE, list: ARGs */         \
  /* expressions */                                                            \
  X(INT)      /* ival */                                                       \
  X(FLOAT)    /* fval (inf is a FLOAT with fval = INFINITY) */                 \
  X(BOOL)     /* ival: 0 or 1 */                                               \
  X(STRING)   /* sval: contents without quotes, escapes resolved */           \
  X(IDENT)    /* name */                                                       \
  X(MEMBER)   /* a: object expr, name: field (nn.linear, wte.weight) */        \
  X(BINOP)    /* op: a BinOp, a, b */                                          \
  X(UNOP)     /* op: UOP_NEG or UOP_NOT, a */                                  \
  X(CALL)     /* a: callee (IDENT or MEMBER), list: ARGs,                      \
                 as_name: `as NAME` or NULL, as_index: `as NAME[expr]` index */ \
  X(ARG)      /* name: keyword or NULL, a: value */                            \
  X(INDEX)    /* a: object, list: subscripts (exprs, SLICE, ELLIPSIS) */       \
  X(SLICE)    /* a: start or NULL, b: end or NULL (a:b, a:, :b, :) */          \
  X(ELLIPSIS) /* `...` in a type or a subscript */                             \
  X(ERROR)    /* placeholder left by error recovery */

typedef enum NodeKind {
#define X(k) N_##k,
  NODE_KINDS(X)
#undef X
  N__COUNT
} NodeKind;

typedef enum BinOp {
  BOP_ADD, BOP_SUB, BOP_MUL, BOP_DIV, BOP_MOD, BOP_MATMUL,
  BOP_EQ, BOP_NE, BOP_LT, BOP_LE, BOP_GT, BOP_GE,
  BOP_AND, BOP_OR,
} BinOp;

typedef enum UnOp { UOP_NEG, UOP_NOT } UnOp;

typedef enum AnnotKind { ANNOT_STAGE, ANNOT_DEVICE, ANNOT_SHARD, ANNOT_RECOMPUTE } AnnotKind;

typedef struct Node Node;
typedef struct NodeList {
  Node **items;
  int n, cap;
} NodeList;

struct Node {
  NodeKind kind;
  Loc loc;
  int op;            /* BinOp, UnOp or AnnotKind */
  const char *name;  /* see NODE_KINDS */
  const char *sval;
  int64_t ival;
  double fval;
  bool has_dims;     /* TYPE: written with [...] */
  Node *a, *b, *c;
  Node *as_name;     /* CALL: IDENT after `as` */
  Node *as_index;    /* CALL: index expr of `as h[i]` */
  NodeList list;     /* see NODE_KINDS */
  NodeList body;     /* DEF, MODEL, FOR, IF (then), BLOCK */
  NodeList else_body;/* IF */
  NodeList annots;   /* statements: ANNOT nodes in source order */
  Loc end;           /* closing brace of a body, where known (for notes) */
};

Node *node_new(Arena *a, NodeKind k, Loc loc);
void node_list_push(Arena *a, NodeList *l, Node *n);
const char *node_kind_name(NodeKind k);
const char *binop_str(BinOp op); /* "+", "@", "and", ... */

/* --emit=ast: a stable, deterministic indented dump with locations. */
void ast_dump(FILE *out, const Node *n);
void ast_dump_string(FILE *out, const char *s);

/* ---- parse.c: entry point of lexer + parser -------------------------- */
/*
 * Parses one file's text. Syntax errors are reported to d (several per run,
 * with recovery); the returned PROGRAM holds whatever was parsed (never NULL).
 */
Node *parse_source(Diag *d, Arena *a, const char *path, const char *text, size_t len);
/* Loads path through diag_load_file and parses it; NULL if it cannot be read. */
Node *parse_file(Diag *d, Arena *a, const char *path);

#endif
