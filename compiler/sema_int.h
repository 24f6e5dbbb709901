/*
 * sema_int.h — the front end's private header (included only by compiler/sema*.c).
 *
 * The files, from the bottom up (each calls only those before it, except the three
 * of the evaluator, which call each other): sema_util.c (strings, diagnostics,
 * values), sema_ops.c (tensor operations on values), the evaluator (sema_eval.c
 * expressions, sema_builtin.c built-in functions, sema_lower.c those lowered to
 * existing ops, sema_stmt.c statements and def calls), sema_place.c (placement after the body has run), sema_train.c (mesh and
 * train block), sema.c (the entry: modules, the model).
 *
 * The front end is an evaluator: it walks the AST of the chosen model, unrolling
 * loops, deciding compile-time `if`s and instantiating `def`s, and appends one graph
 * op for every tensor operation it meets. Compile-time values (ints, floats, bools)
 * are computed on the spot; tensors are op ids.
 *
 * Invariants:
 *  - A Value of kind V_ERR stands for "an error was already reported": every
 *    operation on it yields V_ERR silently, so one mistake gives one diagnostic.
 *  - A Scope is one `def` instantiation or the model body; it owns its variables,
 *    its instance names and the counters of unnamed instances.
 *  - Every op is created through sema_op(), which applies placement (stage, seg,
 *    recompute) and the op-count cap.
 *  - All state lives in one Sema, passed explicitly; nothing is global.
 */
#ifndef MPL_SEMA_INT_H
#define MPL_SEMA_INT_H

#include "mplc.h"

enum {
  SEMA_MAX_DEPTH = 64,             /* nested def calls */
  SEMA_MAX_OPS = 2000000,          /* ops in one graph */
  SEMA_MAX_TRIPS = 1000000,        /* iterations of one for loop */
  SEMA_MAX_STEPS = 20000000,       /* statements executed in all */
  SEMA_MAX_CALLS = 250000,         /* def calls in all (each keeps its scope: ~2 KB) */
};
#define SEMA_MAX_NUMEL ((int64_t)1 << 40)

/* ---- a string -> pointer hash map in the arena (sema_util.c) ------------ */
typedef struct StrMap {
  const char **keys;
  void **vals;
  int n, cap;
} StrMap;
void *strmap_get(const StrMap *m, const char *key);
void strmap_put(Arena *a, StrMap *m, const char *key, void *val);

/* "did you mean" for an unknown name: candidates offered one by one, the nearest kept. */
typedef struct Suggest {
  const char *name, *best;
  int dist;
} Suggest;

/* ---- values -------------------------------------------------------------- */
typedef enum VKind {
  V_ERR,    /* an error was reported */
  V_VOID,   /* no value (a def without return) */
  V_INT, V_FLOAT, V_BOOL, V_STR,
  V_TENSOR, /* op */
  V_NONE,   /* an absent optional param: the identity of the op it is used in */
  V_DTYPE,  /* f32, i32, ... (for cast) */
  V_MODULE, /* mod */
  V_DEF,    /* def, mod */
  V_INST,   /* s: the instance's global prefix */
  V_TUPLE,  /* items, n: results of split */
} VKind;

typedef struct Module Module;
typedef struct Value Value;
struct Value {
  VKind kind;
  int64_t i;     /* V_INT, V_BOOL; V_DTYPE: the DType */
  double f;      /* V_FLOAT */
  int op;        /* V_TENSOR */
  const char *s; /* V_STR, V_INST; V_NONE: the param's name */
  Node *def;     /* V_DEF */
  Module *mod;   /* V_MODULE, V_DEF */
  Value *items;  /* V_TUPLE */
  int n;
  Loc loc;       /* where the value was made (for notes) */
};

/* ---- modules: the main program and each import ------------------------- */
struct Module {
  const char *name;
  Node *program;
  StrMap consts;  /* name -> Value* */
  StrMap defs;    /* name -> Node* (DEF) */
  StrMap imports; /* name -> Module* */
  bool broken;    /* could not be loaded: uses of it are already reported */
  bool loading;   /* its items are being read (an import cycle may reach it meanwhile) */
  StrMap has_params_memo; /* def name -> (void*)1 no / (void*)2 yes / (void*)3 in progress */
};

/* ---- scopes -------------------------------------------------------------- */
typedef struct Binding {
  const char *name;
  Value v;
} Binding;

typedef struct InstName {
  Loc loc;     /* where it was named (for the duplicate note) */
  bool array;  /* `as h[i]`: h names an array of instances */
} InstName;

typedef struct Scope {
  Module *mod;
  const char *prefix; /* global prefix of params declared here ("" in the model) */
  Binding *vars;
  int nvars, capvars;
  StrMap counters;    /* callee -> (intptr_t) count of unnamed instances */
  StrMap insts;       /* local instance name -> InstName* */
  bool returned;
  Value ret;
  Loc ret_loc;        /* the return statement */
  Loc ret_val_loc;    /* ... its expression (one value) */
  bool is_model;
  int nest;           /* depth of for/if/block bodies being run */
} Scope;

/* Placement in effect while evaluating (annotations of enclosing statements). */
typedef struct Place {
  int stage;       /* -1: none given */
  Loc stage_loc;
  int recompute;   /* the @recompute region in effect (S->recompute_regions), 0: none */
} Place;

/* One def call being run: errors inside a stdlib def move to the user's call
 * (sema.c), and the ops it makes remember that call (Op.site). */
typedef struct CallFrame {
  Loc call;          /* the call expression */
  const char *callee;/* as shown: "nn.linear", "mlp" */
  bool stdlib;       /* the def is in a stdlib module */
  CallSite *site;    /* made on first use (sema_site) */
} CallFrame;

typedef struct Sema {
  Diag *d;
  Arena *a;
  const CompileOptions *opt;
  Graph *g;
  Module *main;
  StrMap modules;      /* name -> Module* (loaded imports) */
  StrMap params;       /* global name -> Op* */
  StrMap inst_prefixes;/* every instance's global prefix -> (void*)1, (void*)2 once its call failed */
  StrMap reported;     /* "file:line:col:msg" of reported errors (dedupe) */
  bool last_dropped;
  Loc called_from;     /* the last error's "called from here" note, printed after its other notes */
  const char *called_from_def;
  Place place;
  int recompute_regions; /* @recompute regions made so far */
  int seg;             /* current model-body segment */
  int depth;           /* def call depth */
  int loops;           /* for bodies being run, in any def */
  CallFrame frames[SEMA_MAX_DEPTH]; /* the def calls being run, outermost first */
  int64_t steps;
  int64_t calls;       /* def calls run (SEMA_MAX_CALLS) */
  bool stop;           /* a limit was hit: unwind quietly */
  bool memo_leaned;    /* sema_def_has_params: an answer leaned on a def still being found */
  bool any_stage_annot;
  int dropout_keys;
  int64_t B, T;        /* the model signature's batch and sequence dims */
  Loc batch_loc;       /* the train block's batch value, for its error */
  Loc seq_loc;       /* the train block's seq = (line 0: not given) */
  Loc mesh_pp_loc;     /* the mesh declaration's pp, for the empty-stage error */
  Loc sched_loc;       /* the train block's schedule value, likewise */
  Loc data_loc;      /* the train block's data = tokens(...) (line 0: none) */
  Loc val_loc;       /* its val = tokens(...) over synthetic data (line 0: none) */
  const char **varname;/* op id -> a variable name that held it (for messages) */
  int64_t *bound;      /* op id -> exclusive upper bound for an i32 INPUT (0: none) */
  int64_t *part_bound; /* ... for the part of it some op reads through a slice (0: none) */
  int cap_aux;
} Sema;

/* ==== sema_util.c: what every file uses (it calls no other sema_*.c file) ==== */

/* (strmap_get and strmap_put, above) */
void sema_err(Sema *S, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sema_note(Sema *S, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An error about op (after the model is built): at its user's call if a stdlib def made it. */
void sema_err_op(Sema *S, const Op *op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints the pending "X is called from here" note of the last error (sema_program's end). */
void sema_flush_called_from(Sema *S);
/* Is loc in a stdlib module ("<stdlib>/NAME.mpl")? */
bool sema_in_stdlib(Loc loc);
/* The user's call that led into the stdlib def being run; NULL outside one. */
const CallSite *sema_site(Sema *S);
/* A short description of a value for messages: "int 3", "f32[2, 3]". */
const char *sema_value_desc(Sema *S, Value v);
Value vint(int64_t i, Loc loc);
Value vfloat(double f, Loc loc);
Value vbool(bool b, Loc loc);
Value verr(void);
bool is_num(Value v);
double num_of(Value v);
/* Binds call's arguments to the params named params[0..np) (see sema_util.c). */
bool sema_bind_args(Sema *S, Node *call, const char *fn, const char *const *params, int np, int nreq, Node **out);

static inline bool dtype_is_float(DType t) { return t == DT_F32 || t == DT_BF16 || t == DT_F16; }

/* ==== sema_ops.c: tensor operations on values ==== */

Op *sema_op(Sema *S, OpKind k, int nin, const int *in, Loc loc);
Op *sema_opv(Sema *S, Value v); /* the op of a tensor value */
Value vtensor(Sema *S, Op *op);
Value sema_scalar(Sema *S, Value c, DType dt, Loc loc);
Value sema_unary(Sema *S, OpKind k, Value x, Loc loc);
Value sema_binary(Sema *S, OpKind k, Value a, Value b, Loc loc, const char *opname);
Value sema_matmul(Sema *S, Value a, Value b, bool ta, bool tb, Loc loc);
Value sema_transpose(Sema *S, Value x, Value i, Value j, Loc loc);
Value sema_reshape(Sema *S, Value x, Shape s, Loc loc);
Value sema_slice(Sema *S, Value x, int axis, int64_t begin, int64_t end, Loc loc);
int sema_norm_axis(Sema *S, int64_t axis, int rank, Loc loc);
bool sema_scalar_axis(const Op *xi, int64_t axis);
Value sema_scalar_as_row(Sema *S, Value x, Loc loc);
bool sema_check_shape(Sema *S, Shape *s, Loc loc);
/* "[2, 3]" in the arena. */
const char *sema_shape_str(Sema *S, const Op *op);
/* Notes where a tensor value was made; for two operands, both (once when one place). */
void sema_note_made(Sema *S, Value v);
void sema_note_operands(Sema *S, Value a, Value b);
/* Records an upper bound of the i32 input v reads (through shape ops), for synthetic data. */
void sema_note_bound(Sema *S, Value v, int64_t bound);
/* The indices or targets idx that an op of kind `of` reads lie in [0, bound): checked now,
 * when read from data, or at run time by *check (sema_ops.c), whose stage sema_guard_stage
 * sets from the op once made. False after an error. */
bool sema_guard_index(Sema *S, Value idx, OpKind of, int64_t bound, Loc loc, Op **check);
void sema_guard_stage(Op *check, const Op *guarded);
/* The v2 ops with kernels of their own (issue 13): shape and dtype rules, errors located
 * at loc (the call) or at the argument's loc. */
Value sema_rem(Sema *S, Value a, Value b, Loc loc);
Value sema_div(Sema *S, Value a, Value b, Loc loc);
Value sema_argmax(Sema *S, Value x, int64_t axis, bool keep, Loc loc, Loc axis_loc);
Value sema_cumsum(Sema *S, Value x, int64_t axis, Loc loc, Loc axis_loc);
/* Tensor x as dtype t (a CAST op; x itself when it is t already; verr past the op limit). */
Value sema_cast_to(Sema *S, Value x, DType t, Loc loc);
Value sema_topk(Sema *S, Value x, int64_t k, int64_t axis, Loc loc, Loc k_loc, Loc axis_loc);
Value sema_gather(Sema *S, Value x, Value idx, int64_t axis, Loc loc, Loc axis_loc);
Value sema_one_hot(Sema *S, Value idx, int64_t n, Loc loc, Loc n_loc);
Value sema_conv2d(Sema *S, Value x, Value w, int64_t stride, int64_t pad, Loc loc);

/* ==== the evaluator: sema_eval.c, sema_builtin.c and sema_stmt.c call each other
 * (an expression may call a def, whose body has expressions; a built-in evaluates its
 * arguments) ==== */

/* sema_eval.c: expressions */
Value sema_eval(Sema *S, Scope *sc, Node *e);
Value sema_lookup(Sema *S, Scope *sc, const char *name, Loc loc, bool report);
bool sema_const_int(Sema *S, Scope *sc, Node *e, const char *what, int64_t *out);
bool sema_const_num(Sema *S, Scope *sc, Node *e, const char *what, double *out);
Value sema_binop(Sema *S, int bop, Value a, Value b, Loc loc);

/* sema_builtin.c: built-in functions and indexing */
Value sema_builtin(Sema *S, Scope *sc, Node *call, const char *name, bool *found);
Value sema_index(Sema *S, Scope *sc, Node *e, Value x);
void sema_suggest_builtins(Suggest *g); /* offers every built-in function's name to g */

/* sema_lower.c: built-ins lowered to existing ops (repeat, expand, stack, sdpa);
 * *found tells whether name is one of them */
Value sema_lowered_builtin(Sema *S, Scope *sc, Node *call, const char *name, bool *found);
void sema_suggest_lowered(Suggest *g); /* offers their names to g */

/* sema_stmt.c: statements, defs, instances, params */
void sema_exec_body(Sema *S, Scope *sc, NodeList *body);
Value sema_call_def(Sema *S, Scope *sc, Node *call, Node *def, Module *mod, const char *callee);
void scope_bind(Sema *S, Scope *sc, const char *name, Value v);
Binding *scope_find(Scope *sc, const char *name);
const char *scope_global(Sema *S, Scope *sc, const char *local);
bool sema_def_has_params(Sema *S, Module *mod, Node *def);
bool sema_parse_dtype(const char *name, DType *out);
/* Names the instance made by call in scope sc; NULL after an error. */
const char *sema_instance_name(Sema *S, Scope *sc, Node *call, const char *callee);
Value sema_instance_broken(Sema *S, Scope *sc, const char *local); /* marks it; verr() */
/* A new PARAM op named global; NULL (after an error) if the name is taken. */
Op *sema_new_param(Sema *S, const char *global, DType dt, Shape s, InitKind init, double a, double b, Loc loc);

/* ==== sema_place.c: placement after the model is built ==== */
void sema_place_finish(Sema *S);

/* ==== sema_train.c: mesh, train block, overrides ==== */
void sema_mesh(Sema *S, Node *mesh);
void sema_train(Sema *S, Node *train);
void sema_train_overrides(Sema *S, Loc loc);
/* What puts several stages on a pipeline rank, for messages: "interleaved(2)", "zbv". */
const char *sema_chunks_text(Sema *S);
void sema_suggest_init(Suggest *g, const char *name);
void sema_suggest(Suggest *g, const char *candidate);
void sema_suggest_map(Suggest *g, const StrMap *m);
/* " (did you mean 'x'?)", the language's form of a PyTorch name, or "" */
const char *sema_suggestion(Sema *S, const Suggest *g);
/* Notes where the stage count came from when a flag overrode the program (--mesh pp=N over
 * its mesh, interleaved(v)), after an error about stages. */
void sema_note_stage_origin(Sema *S);

/* ==== sema.c: the entry (sema_program, in mplc.h), modules ==== */
Module *sema_module_find(Sema *S, const char *name, Loc loc);

#endif
