/*
 * sema.c — the front end's entry point: sema_program(), modules and imports,
 * consts and -D overrides, the choice of the model, building it and checking the
 * loss it returns. The top of the front end: it calls every other sema_*.c file and
 * none calls it.
 *
 * Invariants:
 *  - A module is loaded once (by name) and registered before its items are
 *    processed, so import cycles terminate.
 *  - Locations inside a stdlib module print as "<stdlib>/NAME.mpl".
 *  - sema_program returns a graph only when no error was reported.
 */
#include "sema_int.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    if (!found) {
      const char *std = S->opt->stdlib_dir ? S->opt->stdlib_dir : "stdlib";
      const char *env = getenv("MPL_STDLIB");
      struct stat sb;
      bool there = stat(std, &sb) == 0 && S_ISDIR(sb.st_mode);
      if (there)
        sema_err(S, loc, "cannot find module '%s' (%s.mpl in the stdlib directory or an -I directory)", name, name);
      else
        sema_err(S, loc, "cannot find module '%s': the stdlib directory %s%s is not a folder (and no -I directory has "
                 "%s.mpl)", name, std, env && *env && !strcmp(env, std) ? " (MPL_STDLIB)" : "", name);
      for (int i = 0; i < S->opt->include_dirs.n; i++) { /* (a mistyped -I is otherwise silent: pass 92) */
        const char *dir = S->opt->include_dirs.items[i];
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) sema_note(S, loc, "-I %s is not a folder", dir);
      }
    }
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
  /* the language's literals: [-]digits (an int, which must fit), or a decimal float */
  const char *d = s + (*s == '-');
  if (!isdigit((unsigned char)*d)) return false; /* .5 is not a literal */
  bool integral = true;
  for (const char *c = d; *c; c++) integral &= isdigit((unsigned char)*c) != 0;
  errno = 0;
  if (integral) {
    long long i = strtoll(s, &end, 10);
    if (!*end && !errno) { *out = vint(i, (Loc){0}); return true; }
    return false;
  }
  for (const char *c = d; *c; c++)
    if ((!isdigit((unsigned char)*c) && !strchr(".eE+-", *c)) || (*c == '.' && !isdigit((unsigned char)c[1])))
      return false; /* no hex, no spaces; 1. is not a literal */
  double f = strtod(s, &end);
  if (!*end && !errno && isfinite(f)) { *out = vfloat(f, (Loc){0}); return true; }
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
      errno = 0;
      char *end;
      (void)strtoll(df->value, &end, 10);
      if (errno == ERANGE && !*end && end != df->value) /* digits alone: an int past the range */
        sema_err(S, (Loc){0}, "-D %s=%s: the int is past the range of a 64-bit int", df->name, df->value);
      else sema_err(S, (Loc){0}, "-D %s=%s: the value is not an int, a float or a bool", df->name, df->value);
      *v = verr();
    } else {
      /* the override keeps the const's own type: an int given for a float const is that
         float (-D lr=1 made lr / 2 an integer division); a float for an int, or a bool for
         a number, is refused */
      /* a literal's type is its syntax; another expression is evaluated for it (the
         replaced expression's own errors then show, pass 63) */
      Scope sc = {.mod = m, .prefix = ""};
      const Node *a = it->a;
      bool neg = a && a->kind == N_UNOP && a->op == UOP_NEG && a->a && (a->a->kind == N_INT || a->a->kind == N_FLOAT);
      const Node *lit = neg ? a->a : a;
      Value own = lit && lit->kind == N_INT ? vint(0, it->loc) : lit && lit->kind == N_FLOAT ? vfloat(0, it->loc)
                : lit && lit->kind == N_BOOL ? vbool(false, it->loc) : sema_eval(S, &sc, it->a);
      static const char *const kinds[] = {[V_INT] = "an int", [V_FLOAT] = "a float", [V_BOOL] = "a bool"};
      if (own.kind == V_FLOAT && v->kind == V_INT) *v = vfloat((double)v->i, it->loc);
      else if ((own.kind == V_INT || own.kind == V_FLOAT || own.kind == V_BOOL) && own.kind != v->kind) {
        sema_err(S, it->loc, "-D %s=%s: const '%s' is %s here, and -D gives %s", df->name, df->value, it->name,
                 kinds[own.kind], kinds[v->kind]);
        *v = verr();
      }
    }
    v->loc = it->loc;
  } else {
    Scope sc = {.mod = m, .prefix = ""};
    int nops = S->g->nops;
    *v = sema_eval(S, &sc, it->a);
    bool made_param = false; /* a def called for a const's value made a param: a model param of no model */
    for (int i = nops; i < S->g->nops && !made_param; i++) made_param = S->g->ops[i]->kind == OP_PARAM;
    if (made_param && v->kind != V_ERR) {
      sema_err(S, it->a->loc, "const '%s': its value comes from a call that makes params; a const is computed "
               "before any model, and makes none", it->name);
      *v = verr();
    } else if (v->kind == V_TENSOR || v->kind == V_TUPLE || v->kind == V_VOID || v->kind == V_NONE ||
        v->kind == V_MODULE || v->kind == V_DEF || v->kind == V_INST || v->kind == V_DTYPE || v->kind == V_STR) {
      sema_err(S, it->a->loc, "const '%s' must be a compile-time int, float or bool", it->name);
      *v = verr();
    }
  }
  strmap_put(S->a, &m->consts, it->name, v);
}

/* A def's declared type (an argument's or a result's): a tensor type's element is one of
 * the element types (int[...] and float[...] were taken as any tensor, pass 52), with at
 * most one '...'; a type without dimensions is int, float, bool or an element type (a
 * tensor of any shape). */
static void check_sig_type(Sema *S, const Node *ty) {
  if (!ty) return;
  if (ty->kind == N_TYPES) {
    for (int i = 0; i < ty->list.n; i++) check_sig_type(S, ty->list.items[i]);
    return;
  }
  DType dt;
  const char *n = ty->name ? ty->name : "";
  bool elem = sema_parse_dtype(n, &dt), scalar = !strcmp(n, "int") || !strcmp(n, "float") || !strcmp(n, "bool");
  if (ty->has_dims && !elem)
    sema_err(S, ty->loc, "'%s' is not an element type: a tensor type is f32, bf16, f16, i32 or bool[...]%s", n,
             !strcmp(n, "int") ? " (an int tensor is i32[...])" : !strcmp(n, "float") ? " (a float tensor is f32[...])" : "");
  else if (!ty->has_dims && !elem && !scalar)
    sema_err(S, ty->loc, "unknown type '%s': int, float, bool, or an element type (f32, bf16, f16, i32, bool) with "
             "or without [dimensions]", n);
  int ell = 0;
  for (int i = 0; ty->has_dims && i < ty->list.n; i++)
    if (((const Node *)ty->list.items[i])->kind == N_ELLIPSIS && ++ell == 2)
      sema_err(S, ((const Node *)ty->list.items[i])->loc, "only one '...' is allowed in a type");
}

/* Registers a module's imports, consts and defs, in source order. */
/* A def's or model's parameter names are distinct, as Python's. */
static void check_param_names(Sema *S, const Node *fn) {
  for (int i = 0; i < fn->list.n; i++) {
    const Node *p = fn->list.items[i];
    for (int j = 0; j < i; j++)
      if (p->name && !strcmp(((const Node *)fn->list.items[j])->name, p->name)) {
        sema_err(S, p->loc, "%s '%s' has two parameters named '%s'", fn->kind == N_DEF ? "def" : "model", fn->name,
                 p->name);
        break;
      }
  }
}

/* A top-level name is one thing: an import, a const or a def (const nn beside import nn
 * meant two things, and the error came at a use: "int 3 has no member 'linear'"). */
static bool name_taken(Sema *S, Module *m, const Node *it) {
  /* the same kind twice has its own message (a const or a def defined twice) or none (an
     import repeated) */
  const char *what = it->kind != N_IMPORT && strmap_get(&m->imports, it->name) ? "an imported module"
                     : it->kind != N_CONST && strmap_get(&m->consts, it->name) ? "a const"
                     : it->kind != N_DEF && strmap_get(&m->defs, it->name)     ? "a def"
                                                                               : NULL;
  if (!what) return false;
  sema_err(S, it->loc, "'%s' is already %s: %s needs another name", it->name, what,
           it->kind == N_IMPORT ? "a module imported" : it->kind == N_CONST ? "a const" : "a def");
  return true;
}

static void module_init(Sema *S, Module *m, bool is_main) {
  NodeList *items = &m->program->list;
  m->loading = true;
  for (int i = 0; i < items->n; i++) {
    Node *it = items->items[i];
    if ((it->kind == N_IMPORT || it->kind == N_CONST || it->kind == N_DEF) && name_taken(S, m, it)) continue;
    switch (it->kind) {
    case N_IMPORT: {
      Module *im = sema_module_find(S, it->name, it->loc);
      if (im) strmap_put(S->a, &m->imports, it->name, im);
      break;
    }
    case N_CONST: module_const(S, m, it, is_main); break;
    case N_DEF:
      check_param_names(S, it);
      for (int j = 0; j < it->list.n; j++) check_sig_type(S, ((const Node *)it->list.items[j])->a);
      check_sig_type(S, it->a);
      if (strmap_get(&m->defs, it->name)) sema_err(S, it->loc, "def '%s' is defined twice", it->name);
      else strmap_put(S->a, &m->defs, it->name, it);
      break;
    case N_MODEL: case N_TRAIN: case N_MESH:
      if (!is_main) sema_err(S, it->loc, "an imported module may not declare %s", it->kind == N_MODEL ? "a model" : it->kind == N_TRAIN ? "a train block" : "a mesh");
      break;
    default: break;
    }
  }
  m->loading = false;
}

/* Each -D names a const of the main file (a name given twice is refused on mplc's command
 * line, with every repeated option). */
static void check_defines(Sema *S) {
  for (int i = 0; i < S->opt->defines.n; i++) {
    const Define *df = S->opt->defines.items[i];
    if (strmap_get(&S->main->consts, df->name)) continue;
    const char *in = NULL; /* a module's const (pass 87: "the program has no const" named none) */
    for (int j = 0; j < S->modules.cap && !in; j++)
      if (S->modules.keys[j] && strmap_get(&((Module *)S->modules.vals[j])->consts, df->name)) in = S->modules.keys[j];
    if (in)
      sema_err(S, (Loc){0}, "-D %s: '%s' is a const of module '%s', and -D replaces only the main program's consts",
               df->name, df->name, in);
    else sema_err(S, (Loc){0}, "-D %s: the program has no const '%s'", df->name, df->name);
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
      check_param_names(S, it);
      bool twice = false;
      for (int j = 0; j < i && !twice; j++) {
        const Node *o = program->list.items[j];
        if (o->kind == N_MODEL && !strcmp(o->name, it->name)) {
          sema_err(S, it->loc, "model '%s' is defined twice", it->name);
          twice = true;
        }
      }
      nmodels += !twice; /* models by name: no "several models" error for the same one twice */
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
    sema_err(S, program->loc, "the program declares no model (model NAME(inputs) { ... })");
    return NULL;
  }
  if (nmodels > 1) {
    sema_err(S, model->loc, "several models and no train block saying which one to train");
    return NULL;
  }
  return model;
}

/* The model's inputs: INPUT ops with B and T bound from the train config. */
/* Does the AST under n read the name (an identifier of that name anywhere: the model's
 * signature, body, annotations)? */
static bool ast_reads(const Node *n, const char *name) {
  if (!n) return false;
  if (n->kind == N_IDENT && n->name && !strcmp(n->name, name)) return true;
  if (ast_reads(n->a, name) || ast_reads(n->b, name) || ast_reads(n->c, name) || ast_reads(n->as_index, name)) return true;
  const NodeList *ls[] = {&n->list, &n->body, &n->else_body, &n->annots};
  for (int l = 0; l < 4; l++)
    for (int i = 0; i < ls[l]->n; i++)
      if (ast_reads(ls[l]->items[i], name)) return true;
  return false;
}

static void model_inputs(Sema *S, Scope *sc, Node *model) {
  /* in the model, B and T are the micro-batch's rows and seq: a const of the file by that
     name is hidden there, and one of another value that the model reads would silently
     mean two things (pass 61: const T = 2048 became 64 inside the model); a def reads the
     const itself, and a model that never names it is not concerned (pass 63) */
  static const char *const names[2] = {"B", "T"};
  for (int k = 0; k < 2; k++) {
    const Value *c = strmap_get(&sc->mod->consts, names[k]);
    int64_t want = k ? S->T : S->B;
    if (c && c->kind == V_INT && c->i != want && ast_reads(model, names[k]))
      sema_err(S, c->loc, "const %s = %lld is hidden inside model %s, where %s is %s (%lld): rename the const",
               names[k], (long long)c->i, model->name, names[k],
               k ? "the sequence length, the train block's seq" : "a micro-batch's rows, batch / (microbatches * dp)",
               (long long)want);
  }
  scope_bind(S, sc, "B", vint(S->B, model->loc));
  scope_bind(S, sc, "T", vint(S->T, model->loc));
  for (int i = 0; i < model->list.n; i++) {
    Node *pd = model->list.items[i];
    Node *ty = pd->a;
    if (pd->b) /* the data gives every input: a default would never be read */
      sema_err(S, pd->b->loc, "model input '%s' takes no default value: the data gives it", pd->name);
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
    /* (a tuple's place is the return itself, where the error already points) */
    if (r.loc.line && r.kind != V_TUPLE) sema_note(S, r.loc, "%s was made here", sema_value_desc(S, r));
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
  if (op->kind == OP_PARAM || op->kind == OP_INPUT) { /* no op computes it: no stage has work */
    sema_err(S, sc->ret_loc, "the loss is %s '%s' itself, which no op computes (write `1.0 * %s` to train %s "
             "as its own loss)", op->kind == OP_PARAM ? "param" : "input", op->name ? op->name : "?",
             op->name ? op->name : "it", op->kind == OP_PARAM ? "a param" : "on an input");
    return;
  }
  S->g->loss = r.op;
}

/* Every model input holds a micro-batch's rows: its first dimension is B (batch /
 * (microbatches * dp)), the rows the data feeds it (mplrun checks the same of a job). */
static void check_inputs_batch(Sema *S) {
  const Graph *g = S->g;
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_INPUT || (op->shape.rank >= 1 && op->shape.d[0] == S->B)) continue;
    char buf[96];
    sema_err(S, op->loc, "model input '%s' is %s%s: an input's first dimension is B, the %lld rows of a micro-batch "
             "(batch %lld / (microbatches %lld * dp %d))", op->name, dtype_name(op->dtype),
             shape_str(&op->shape, buf, sizeof buf), (long long)S->B, (long long)g->train.batch,
             (long long)g->train.microbatches, g->mesh.dp);
  }
}

/* data = tokens(...) feeds the model's inputs (idx, targets) from the token stream: both
 * i32[B, seq], no others (mplrun checks the same of a job, for --data over synthetic). val =
 * tokens(...) over synthetic data: a warning where mplrun --data can give the run its tokens
 * (pass 83: an error), an error where the inputs cannot take them (pass 84). */
static bool takes_tokens(const Graph *g, const Op *input) {
  return input->dtype == DT_I32 && input->shape.rank == 2 && input->shape.d[1] == g->train.seq;
}

static void check_token_inputs(Sema *S) {
  const Graph *g = S->g;
  if (S->val_loc.line) {
    int n = 0;
    const Op *bad = NULL;
    for (int i = 0; i < g->nops && !bad; i++) {
      const Op *op = g->ops[i];
      if (op->kind != OP_INPUT) continue;
      if (++n > 2 || !takes_tokens(g, op)) bad = op;
    }
    if (bad || n < 2)
      sema_err(S, S->val_loc, "val needs a token model trained on token data: validation feeds (idx, targets), "
               "i32[B, seq], and %s%s%s", bad ? "model input '" : "the model has fewer inputs", bad ? bad->name : "",
               bad ? "' cannot take them" : "");
    else
      diag_warning(S->d, S->val_loc, "val needs token data: validation feeds the model's (idx, targets) as data = "
                   "tokens(\"file.bin\") does, but data is synthetic(%lld): give mplrun --data FILE",
                   (long long)g->train.synthetic_n);
  }
  if (g->train.data_kind != DATA_TOKENS) return;
  int n = 0;
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_INPUT) continue;
    char buf[96];
    if (++n > 2) {
      sema_err(S, op->loc, "model input '%s': token data feeds two inputs, (idx, targets), and this is a third",
               op->name);
    } else if (!takes_tokens(g, op)) {
      sema_err(S, op->loc, "model input '%s' is %s%s, but token data feeds i32[B, %lld] (seq = %lld)", op->name,
               dtype_name(op->dtype), shape_str(&op->shape, buf, sizeof buf), (long long)g->train.seq,
               (long long)g->train.seq);
    } else {
      continue;
    }
    if (S->data_loc.line) sema_note(S, S->data_loc, "the token data is named here");
  }
}

/* seq = N where nothing reads it (no T in the model, no input i32[B, seq] for tokens to
 * feed or sample from): a warning, as for a key that does nothing (pass 87: silent). */
static void check_seq_read(Sema *S, Node *model) {
  const Graph *g = S->g;
  if (!S->seq_loc.line || ast_reads(model, "T")) return;
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->kind == OP_INPUT && takes_tokens(g, g->ops[i])) return;
  diag_warning(S->d, S->seq_loc, "seq = %lld has no effect: model %s never names T (the sequence length) and no "
               "input is i32[B, %lld]", (long long)g->train.seq, model->name, (long long)g->train.seq);
}

/* i32 inputs: the exclusive bound of their values (0: none), and the one synthetic data
 * draws in (the same, or where no op reads the whole input, a slice's bound). */
static void input_bounds(Sema *S) {
  for (int i = 0; i < S->g->nops; i++) {
    Op *op = S->g->ops[i];
    if (op->kind != OP_INPUT || op->dtype != DT_I32) continue;
    op->value = S->bound[i] > 0 ? (double)S->bound[i] : 0;
    op->draw_hi = S->bound[i] > 0 ? S->bound[i] : S->part_bound[i];
    int64_t most = S->bound[i] > S->part_bound[i] ? S->bound[i] : S->part_bound[i];
    if (most > INT32_MAX) /* (an index into more than an i32 can count: the job could not hold it, pass 92) */
      sema_err(S, op->loc, "model input '%s' indexes %lld rows or classes: at most %d are supported (the range of an i32)", op->name,
               (long long)most, INT32_MAX);
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
  if (model && !S->stop && d->nerrors == errors0) check_inputs_batch(S);
  if (model && !S->stop && d->nerrors == errors0) check_token_inputs(S);
  if (model && !S->stop && d->nerrors == errors0) check_seq_read(S, model);
  if (d->nerrors == errors0 && !S->stop) sema_place_finish(S);
  sema_flush_called_from(S);
  if (d->nerrors != errors0 || S->stop) return NULL;
  input_bounds(S);
  graph_verify(S->g);
  return S->g;
}
