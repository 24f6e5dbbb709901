/*
 * sema.c — the front end's entry point: sema_program(), modules and imports,
 * consts and -D overrides, the choice of the model, and the diagnostics helpers
 * the other sema_*.c files share.
 *
 * Invariants:
 *  - A module is loaded once (by name) and registered before its items are
 *    processed, so import cycles terminate.
 *  - Locations inside a stdlib module print as "<stdlib>/NAME.mpl".
 *  - The same error at the same place (a def body instantiated many times) is
 *    reported once; its notes are dropped with it.
 *  - An error inside a stdlib def is reported at the user's call that led there,
 *    with a note at the stdlib line; one inside a def of the user's keeps its
 *    place and notes the call that ran it.
 *  - sema_program returns a graph only when no error was reported.
 */
#include "sema_int.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- StrMap: open addressing, FNV-1a -------------------------------------- */
static uint64_t strmap_hash(const char *s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ull;
  return h;
}

static int strmap_slot(const StrMap *m, const char *key) {
  uint64_t mask = (uint64_t)m->cap - 1;
  for (uint64_t i = strmap_hash(key) & mask;; i = (i + 1) & mask)
    if (!m->keys[i] || !strcmp(m->keys[i], key)) return (int)i;
}

void *strmap_get(const StrMap *m, const char *key) {
  if (!m->cap) return NULL;
  int i = strmap_slot(m, key);
  return m->keys[i] ? m->vals[i] : NULL;
}

static void strmap_grow(Arena *a, StrMap *m) {
  StrMap old = *m;
  m->cap = old.cap ? old.cap * 2 : 16;
  m->n = 0;
  m->keys = arena_alloc(a, sizeof(char *) * (size_t)m->cap);
  m->vals = arena_alloc(a, sizeof(void *) * (size_t)m->cap);
  for (int i = 0; i < old.cap; i++)
    if (old.keys[i]) strmap_put(a, m, old.keys[i], old.vals[i]);
}

void strmap_put(Arena *a, StrMap *m, const char *key, void *val) {
  if ((m->n + 1) * 2 > m->cap) strmap_grow(a, m);
  int i = strmap_slot(m, key);
  if (!m->keys[i]) {
    m->keys[i] = key;
    m->n++;
  }
  m->vals[i] = val;
}

/* ---- diagnostics, deduplicated -------------------------------------------- */
bool sema_in_stdlib(Loc loc) { return loc.file && !strncmp(loc.file, "<stdlib>/", 9); }

/* The innermost frame whose call is in the user's code, or -1. */
static int user_frame(const Sema *S) {
  for (int i = S->depth - 1; i >= 0; i--)
    if (!sema_in_stdlib(S->frames[i].call)) return i;
  return -1;
}

/* "nn.attention (called by nn.block)": the stdlib defs from the innermost frame out to k. */
static const char *inside_desc(Sema *S, int k) {
  const char *s = S->frames[S->depth - 1].callee;
  for (int i = S->depth - 2; i >= k; i--)
    s = arena_printf(S->a, i == S->depth - 2 ? "%s (called by %s" : "%s, called by %s", s, S->frames[i].callee);
  return S->depth - 2 >= k ? arena_printf(S->a, "%s)", s) : s;
}

const CallSite *sema_site(Sema *S) {
  if (S->depth == 0 || !S->frames[S->depth - 1].stdlib) return NULL;
  CallFrame *f = &S->frames[S->depth - 1];
  int k = user_frame(S);
  if (k < 0) return NULL;
  if (!f->site) {
    f->site = arena_alloc(S->a, sizeof *f->site);
    *f->site = (CallSite){S->frames[k].call, inside_desc(S, k)};
  }
  return f->site;
}

/* The note of where the user's def that went wrong was called: it follows the error's
 * own notes, so it is printed at the next error or when sema ends. */
static void flush_called_from(Sema *S) {
  if (S->called_from.line) diag_note(S->d, S->called_from, "%s is called from here", S->called_from_def);
  S->called_from = (Loc){0};
}

/* Reports msg at loc, or at site's user call with a note at loc; then, when a def of
 * the user's is being run (caller >= 0), where it was called. Once per place and text. */
static void report(Sema *S, Loc loc, const CallSite *site, int caller, const char *msg) {
  flush_called_from(S);
  Loc at = site ? site->loc : loc;
  const char *key = arena_printf(S->a, "%s:%d:%d:%s", at.file ? at.file : "", at.line, at.col, msg);
  if (strmap_get(&S->reported, key)) {
    S->last_dropped = true;
    return;
  }
  strmap_put(S->a, &S->reported, key, (void *)1);
  S->last_dropped = false;
  if (at.line) diag_error(S->d, at, "%s", msg);
  else diag_error_noloc(S->d, "%s", msg);
  if (site && at.line) note_inside(S->d, loc, site->inside);
  if (caller >= 0 && at.line && !loc_same(S->frames[caller].call, at)) {
    S->called_from = S->frames[caller].call;
    S->called_from_def = S->frames[caller].callee;
  }
}

/* An error inside a stdlib def goes to the user's call that led there; one inside a
 * def of the user's notes the call that ran it. */
void sema_err(Sema *S, Loc loc, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const CallSite *site = sema_in_stdlib(loc) ? sema_site(S) : NULL;
  int caller = site ? user_frame(S) - 1 : S->depth - 1;
  if (caller >= 0 && S->frames[caller].stdlib) caller = -1;
  report(S, loc, site, caller, msg);
}

void sema_err_op(Sema *S, const Op *op, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  report(S, op->loc, op->site, -1, msg);
}

void sema_note(Sema *S, Loc loc, const char *fmt, ...) {
  char msg[1024];
  if (S->last_dropped || !loc.line) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  diag_note(S->d, loc, "%s", msg);
}

/* A short description of a value for messages: "int 3", "f32[2, 3]". */
const char *sema_value_desc(Sema *S, Value v) {
  char buf[160];
  switch (v.kind) {
  case V_INT: return arena_printf(S->a, "int %lld", (long long)v.i);
  case V_FLOAT: return arena_printf(S->a, "float %g", v.f);
  case V_BOOL: return v.i ? "bool true" : "bool false";
  case V_STR: return "a string";
  case V_TENSOR: {
    Op *op = S->g->ops[v.op];
    return arena_printf(S->a, "%s%s", dtype_name(op->dtype), shape_str(&op->shape, buf, sizeof buf));
  }
  case V_NONE: return "an absent param";
  case V_DTYPE: return "an element type";
  case V_MODULE: return "a module";
  case V_DEF: return "a def";
  case V_INST: return "an instance";
  case V_TUPLE: return "several values";
  case V_VOID: return "nothing";
  case V_ERR: return "an error";
  }
  return "?";
}

/* ---- modules ---------------------------------------------------------------- */
/* Looks for NAME.mpl in the stdlib directory, then the -I directories. */
static Node *load_module_file(Sema *S, const char *name, bool *found) {
  const CompileOptions *o = S->opt;
  int ndirs = o->include_dirs.n + 1;
  for (int i = 0; i < ndirs; i++) {
    const char *dir = i == 0 ? o->stdlib_dir : o->include_dirs.items[i - 1];
    if (!dir) continue;
    const char *path = arena_printf(S->a, "%s/%s.mpl", dir, name);
    SourceFile *f = diag_load_file(S->d, path);
    if (!f) continue;
    *found = true;
    if (i == 0) f->path = arena_printf(S->a, "<stdlib>/%s.mpl", name); /* as errors show it */
    int before = S->d->nerrors;
    Node *prog = parse_source(S->d, S->a, f->path, f->text, f->len);
    if (S->d->nerrors > before) return NULL;
    return prog;
  }
  return NULL;
}

static void module_init(Sema *S, Module *m, bool is_main);

Module *sema_module_find(Sema *S, const char *name, Loc loc) {
  Module *m = strmap_get(&S->modules, name);
  if (m) return m;
  bool found = false;
  Node *prog = load_module_file(S, name, &found);
  m = arena_alloc(S->a, sizeof *m);
  m->name = name;
  m->program = prog;
  strmap_put(S->a, &S->modules, name, m);
  if (!prog) {
    if (!found) sema_err(S, loc, "cannot find module '%s' (%s.mpl in the stdlib directory or an -I directory)", name, name);
    m->broken = true;
    return m;
  }
  module_init(S, m, false);
  return m;
}

/* Parses a -D value: an int, a float, or a bool. */
static bool parse_define(const char *s, Value *out) {
  char *end;
  if (!strcmp(s, "true") || !strcmp(s, "false")) { *out = vbool(s[0] == 't', (Loc){0}); return true; }
  if (!strcmp(s, "inf")) { *out = vfloat(INFINITY, (Loc){0}); return true; }
  if (!strcmp(s, "-inf")) { *out = vfloat(-INFINITY, (Loc){0}); return true; }
  errno = 0;
  long long i = strtoll(s, &end, 10);
  if (*s && !*end && !errno) { *out = vint(i, (Loc){0}); return true; }
  errno = 0;
  double f = strtod(s, &end);
  if (*s && !*end && !errno && isfinite(f)) { *out = vfloat(f, (Loc){0}); return true; }
  return false;
}

static const Define *find_define(Sema *S, const char *name) {
  for (int i = 0; i < S->opt->defines.n; i++) {
    const Define *df = S->opt->defines.items[i];
    if (!strcmp(df->name, name)) return df;
  }
  return NULL;
}

static void module_const(Sema *S, Module *m, Node *it, bool is_main) {
  if (strmap_get(&m->consts, it->name)) {
    sema_err(S, it->loc, "const '%s' is defined twice", it->name);
    return;
  }
  Value *v = arena_alloc(S->a, sizeof *v);
  const Define *df = is_main ? find_define(S, it->name) : NULL;
  if (df) {
    if (!parse_define(df->value, v)) {
      sema_err(S, (Loc){0}, "-D %s=%s: the value is not an int, a float or a bool", df->name, df->value);
      *v = verr();
    }
    v->loc = it->loc;
  } else {
    Scope sc = {.mod = m, .prefix = ""};
    *v = sema_eval(S, &sc, it->a);
    if (v->kind == V_TENSOR || v->kind == V_TUPLE || v->kind == V_VOID || v->kind == V_NONE ||
        v->kind == V_MODULE || v->kind == V_DEF || v->kind == V_INST || v->kind == V_DTYPE || v->kind == V_STR) {
      sema_err(S, it->a->loc, "const '%s' must be a compile-time int, float or bool", it->name);
      *v = verr();
    }
  }
  strmap_put(S->a, &m->consts, it->name, v);
}

/* Registers a module's imports, consts and defs, in source order. */
static void module_init(Sema *S, Module *m, bool is_main) {
  NodeList *items = &m->program->list;
  for (int i = 0; i < items->n; i++) {
    Node *it = items->items[i];
    switch (it->kind) {
    case N_IMPORT: {
      Module *im = sema_module_find(S, it->name, it->loc);
      if (im) strmap_put(S->a, &m->imports, it->name, im);
      break;
    }
    case N_CONST: module_const(S, m, it, is_main); break;
    case N_DEF:
      if (strmap_get(&m->defs, it->name)) sema_err(S, it->loc, "def '%s' is defined twice", it->name);
      else strmap_put(S->a, &m->defs, it->name, it);
      break;
    case N_MODEL: case N_TRAIN: case N_MESH:
      if (!is_main) sema_err(S, it->loc, "an imported module may not declare %s", it->kind == N_MODEL ? "a model" : it->kind == N_TRAIN ? "a train block" : "a mesh");
      break;
    default: break;
    }
  }
}

static void check_defines(Sema *S) {
  for (int i = 0; i < S->opt->defines.n; i++) {
    const Define *df = S->opt->defines.items[i];
    if (!strmap_get(&S->main->consts, df->name))
      sema_err(S, (Loc){0}, "-D %s: the program has no const '%s'", df->name, df->name);
  }
}

/* The model to build: the train block's, else the only one. */
static Node *choose_model(Sema *S, Node *program, Node **train_out) {
  Node *train = NULL, *model = NULL, *mesh = NULL;
  int nmodels = 0;
  for (int i = 0; i < program->list.n; i++) {
    Node *it = program->list.items[i];
    if (it->kind == N_TRAIN) {
      if (train) sema_err(S, it->loc, "a second train block (one program trains one model)");
      else train = it;
    } else if (it->kind == N_MESH) {
      if (mesh) sema_err(S, it->loc, "a second mesh declaration");
      else mesh = it;
    } else if (it->kind == N_MODEL) {
      nmodels++;
      if (!model) model = it;
    }
  }
  sema_mesh(S, mesh);
  *train_out = train;
  if (train) {
    for (int i = 0; i < program->list.n; i++) {
      Node *it = program->list.items[i];
      if (it->kind == N_MODEL && !strcmp(it->name, train->name)) return it;
    }
    sema_err(S, train->loc, "train block names model '%s', which does not exist", train->name);
    return NULL;
  }
  if (nmodels == 0) {
    sema_err(S, (Loc){0}, "the program declares no model");
    return NULL;
  }
  if (nmodels > 1) {
    sema_err(S, model->loc, "several models and no train block saying which one to train");
    return NULL;
  }
  return model;
}

/* The model's inputs: INPUT ops with B and T bound from the train config. */
static void model_inputs(Sema *S, Scope *sc, Node *model) {
  scope_bind(S, sc, "B", vint(S->B, model->loc));
  scope_bind(S, sc, "T", vint(S->T, model->loc));
  for (int i = 0; i < model->list.n; i++) {
    Node *pd = model->list.items[i];
    Node *ty = pd->a;
    DType dt;
    if (!ty || !sema_parse_dtype(ty->name, &dt) || !ty->has_dims) {
      sema_err(S, pd->loc, "model input '%s' needs a tensor type such as f32[B, T]", pd->name);
      scope_bind(S, sc, pd->name, verr());
      continue;
    }
    Shape s = {0};
    bool ok = ty->list.n <= MPL_MAX_RANK;
    if (!ok) sema_err(S, ty->loc, "more than %d dimensions", MPL_MAX_RANK);
    for (int j = 0; ok && j < ty->list.n; j++) {
      Node *de = ty->list.items[j];
      int64_t v;
      if (!sema_const_int(S, sc, de, "a model input's dimension", &v)) { ok = false; break; }
      s.d[s.rank++] = v;
    }
    if (ok) ok = sema_check_shape(S, &s, ty->loc);
    if (!ok) { scope_bind(S, sc, pd->name, verr()); continue; }
    Op *op = sema_op(S, OP_INPUT, 0, NULL, pd->loc);
    if (!op) return;
    op->name = pd->name;
    op->dtype = dt;
    op->shape = s;
    scope_bind(S, sc, pd->name, vtensor(S, op));
  }
}

/* Where a returned value that is not a loss was made (a stdlib def's result: the call). */
static void note_loss_made(Sema *S, Value r) {
  if (r.kind != V_TENSOR) {
    if (r.loc.line) sema_note(S, r.loc, "%s was made here", sema_value_desc(S, r));
    return;
  }
  const Op *op = S->g->ops[r.op];
  const char *name = S->varname[op->id] ? S->varname[op->id] : op->name;
  const char *what = sema_value_desc(S, r);
  if (name) sema_note(S, op_user_loc(op), "'%s' %s was made here", name, what);
  else sema_note(S, op_user_loc(op), "%s was made here", what);
}

/* Runs the model body and checks the loss it returns. */
static void build_model(Sema *S, Node *model) {
  Scope *sc = arena_alloc(S->a, sizeof *sc);
  sc->mod = S->main;
  sc->prefix = "";
  sc->is_model = true;
  S->g->model_name = model->name;
  model_inputs(S, sc, model);
  sema_exec_body(S, sc, &model->body);
  if (S->stop) return;
  if (!sc->returned) {
    sema_err(S, model->loc, "model '%s' does not return its loss", model->name);
    return;
  }
  Value r = sc->ret;
  if (r.kind == V_ERR) return;
  const Op *op = r.kind == V_TENSOR ? S->g->ops[r.op] : NULL;
  if (!op || op->shape.rank != 0 || op->dtype != DT_F32) {
    sema_err(S, sc->ret_loc, "the model must return a scalar f32 loss, not %s", sema_value_desc(S, r));
    note_loss_made(S, r);
    return;
  }
  S->g->loss = r.op;
}

/* i32 inputs: the exclusive bound of their values, for synthetic data. */
static void input_bounds(Sema *S) {
  for (int i = 0; i < S->g->nops; i++) {
    Op *op = S->g->ops[i];
    if (op->kind == OP_INPUT && op->dtype == DT_I32) op->value = S->bound[i] > 0 ? (double)S->bound[i] : 2;
  }
}

Graph *sema_program(Diag *d, Arena *a, Node *program, const CompileOptions *opt) {
  CompileOptions defaults = {0};
  if (!opt) opt = &defaults;
  Sema *S = arena_alloc(a, sizeof *S);
  S->d = d;
  S->a = a;
  S->opt = opt;
  S->g = graph_new(a);
  S->place = (Place){.stage = -1};
  S->seg = -1;
  int errors0 = d->nerrors;
  Module *m = arena_alloc(a, sizeof *m);
  m->name = "";
  m->program = program;
  S->main = m;
  module_init(S, m, true);
  check_defines(S);
  Node *train = NULL;
  Node *model = choose_model(S, program, &train);
  sema_train(S, train);
  sema_train_overrides(S, train ? train->loc : (Loc){0});
  if (model && !S->stop) build_model(S, model);
  if (d->nerrors == errors0 && !S->stop) sema_place_finish(S);
  flush_called_from(S);
  if (d->nerrors != errors0 || S->stop) return NULL;
  input_bounds(S);
  graph_verify(S->g);
  return S->g;
}
