/*
 * sema_stmt.c — statements, placement annotations, params, and the
 * instantiation of defs (argument binding, symbolic dimensions, instance names).
 *
 * Invariants:
 *  - `for` is unrolled and `if` decided at compile time; their bodies are not
 *    scopes. A def call runs its body in a fresh Scope that sees only its args,
 *    its module's consts, defs and imports.
 *  - A call makes an instance iff its def declares params directly or through
 *    the defs it calls (decided statically, memoized per module).
 *  - Instance names are unique per scope; unnamed ones are CALLEE_K, K counted
 *    per callee in source order with loops unrolled.
 *  - Annotations are evaluated when their statement runs (a `for`'s for each
 *    iteration, so `@stage(i)` may use the loop variable) and restored after it.
 */
#include "sema_int.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- scopes ------------------------------------------------------------------ */
Binding *scope_find(Scope *sc, const char *name) {
  for (int i = sc->nvars - 1; i >= 0; i--)
    if (!strcmp(sc->vars[i].name, name)) return &sc->vars[i];
  return NULL;
}

/* The global name of `local` declared in sc: qualified by the instance prefix. */
const char *scope_global(Sema *S, Scope *sc, const char *local) {
  return *sc->prefix ? arena_printf(S->a, "%s.%s", sc->prefix, local) : local;
}

void scope_bind(Sema *S, Scope *sc, const char *name, Value v) {
  if (v.kind == V_TENSOR && !S->varname[v.op]) S->varname[v.op] = name;
  Binding *b = scope_find(sc, name);
  if (b) { b->v = v; return; }
  if (sc->nvars == sc->capvars) {
    int cap = sc->capvars ? sc->capvars * 2 : 16;
    Binding *nv = arena_alloc(S->a, sizeof *nv * (size_t)cap);
    if (sc->nvars) memcpy(nv, sc->vars, sizeof *nv * (size_t)sc->nvars);
    sc->vars = nv;
    sc->capvars = cap;
  }
  sc->vars[sc->nvars++] = (Binding){name, v};
}

bool sema_parse_dtype(const char *name, DType *out) {
  static const char *const names[] = {[DT_F32] = "f32", [DT_BF16] = "bf16", [DT_F16] = "f16", [DT_I32] = "i32", [DT_BOOL] = "bool"};
  for (int i = 0; i < DT__COUNT; i++)
    if (name && !strcmp(name, names[i])) { *out = (DType)i; return true; }
  return false;
}

/* ---- which defs make instances ---------------------------------------------------- */
static bool node_has_params(Sema *S, Module *mod, Node *n);

static bool call_has_params(Sema *S, Module *mod, Node *call) {
  Node *c = call->a;
  if (c && c->kind == N_IDENT) {
    Node *def = strmap_get(&mod->defs, c->name);
    if (def) return sema_def_has_params(S, mod, def);
    return !strcmp(c->name, "embedding");
  }
  if (c && c->kind == N_MEMBER && c->a->kind == N_IDENT) {
    Module *m = strmap_get(&mod->imports, c->a->name);
    Node *def = m ? strmap_get(&m->defs, c->name) : NULL;
    if (def) return sema_def_has_params(S, m, def);
  }
  return false;
}

static bool list_has_params(Sema *S, Module *mod, NodeList *l) {
  for (int i = 0; i < l->n; i++)
    if (node_has_params(S, mod, l->items[i])) return true;
  return false;
}

static bool node_has_params(Sema *S, Module *mod, Node *n) {
  if (!n) return false;
  if (n->kind == N_PARAM) return true;
  if (n->kind == N_CALL && call_has_params(S, mod, n)) return true;
  return node_has_params(S, mod, n->a) || node_has_params(S, mod, n->b) || node_has_params(S, mod, n->c) ||
         list_has_params(S, mod, &n->list) || list_has_params(S, mod, &n->body) || list_has_params(S, mod, &n->else_body);
}

/* Memoized: 1 no, 2 yes, 3 being found (a recursion: no params through that path). A "no"
 * that leaned on a def still being found (b in a -> b -> a, while a is) is not kept: a may
 * yet declare a param after its call of b; b is found again when asked next. */
bool sema_def_has_params(Sema *S, Module *mod, Node *def) {
  intptr_t memo = (intptr_t)strmap_get(&mod->has_params_memo, def->name);
  if (memo == 3) S->memo_leaned = true;
  if (memo) return memo == 2;
  bool outer = S->memo_leaned;
  S->memo_leaned = false;
  strmap_put(S->a, &mod->has_params_memo, def->name, (void *)3);
  bool yes = list_has_params(S, mod, &def->body);
  bool keep = yes || !S->memo_leaned;
  strmap_put(S->a, &mod->has_params_memo, def->name, keep ? (void *)(intptr_t)(yes ? 2 : 1) : NULL);
  S->memo_leaned = outer || (S->memo_leaned && !keep);
  return yes;
}

/* ---- instance names ------------------------------------------------------------------ */
const char *sema_instance_name(Sema *S, Scope *sc, Node *call, const char *callee) {
  const char *local;
  Loc loc = call->as_name ? call->as_name->loc : call->loc;
  if (call->as_name && call->as_index) {
    int64_t i;
    if (!sema_const_int(S, sc, call->as_index, "an instance index", &i)) return NULL;
    if (i < 0) { /* h[-1] would name params 'h.-1.weight' */
      sema_err(S, call->as_index->loc, "an instance index must be 0 or more, not %lld", (long long)i);
      return NULL;
    }
    const char *base = call->as_name->name;
    InstName *arr = strmap_get(&sc->insts, base);
    if (arr && !arr->array) {
      sema_err(S, loc, "instance name '%s' is used twice in this scope", base);
      sema_note(S, arr->loc, "'%s' was first used here", base);
      return NULL;
    }
    if (!arr) {
      arr = arena_alloc(S->a, sizeof *arr);
      *arr = (InstName){loc, true};
      strmap_put(S->a, &sc->insts, base, arr);
    }
    local = arena_printf(S->a, "%s.%lld", base, (long long)i);
  } else if (call->as_name) {
    local = call->as_name->name;
  } else {
    intptr_t k = (intptr_t)strmap_get(&sc->counters, callee);
    strmap_put(S->a, &sc->counters, callee, (void *)(k + 1));
    local = arena_printf(S->a, "%s_%ld", callee, (long)k);
  }
  /* a param and an instance of one name: 'fc.weight' would name both (nn.Module refuses it too) */
  const char *own = call->as_name && call->as_index ? call->as_name->name : local;
  Op *param = strmap_get(&S->params, scope_global(S, sc, own));
  if (param) {
    sema_err(S, loc, "instance name '%s' is the name of a param in this scope", own);
    sema_note(S, param->loc, "param '%s' is declared here", own);
    return NULL;
  }
  InstName *prev = strmap_get(&sc->insts, local);
  if (prev) {
    sema_err(S, loc, "instance name '%s' is used twice in this scope", local);
    bool again = prev->loc.line == loc.line && prev->loc.col == loc.col && prev->loc.file == loc.file;
    if (again && call->as_index) /* as h[i] inside a second loop: 'as h.0[j]' does not parse (pass 87) */
      sema_note(S, loc, "this call runs more than once with one index (nested loops?); give each run its own index, "
                        "as in 'as %s[i * n + j]' with n the inner loop's count", call->as_name->name);
    else if (again)
      sema_note(S, loc, "this call runs more than once (in a loop?); name each instance with 'as %s[i]'", local);
    else
      sema_note(S, prev->loc, "'%s' was first used here", local);
    return NULL;
  }
  InstName *in = arena_alloc(S->a, sizeof *in);
  *in = (InstName){loc, false};
  strmap_put(S->a, &sc->insts, local, in);
  const char *global = scope_global(S, sc, local);
  strmap_put(S->a, &S->inst_prefixes, global, (void *)1);
  return local;
}

/* An instance whose call failed (an error was reported there): a later use of a param it did
 * not make reports nothing more (-D d=0 made wte's weight [vocab, 0]). */
Value sema_instance_broken(Sema *S, Scope *sc, const char *local) {
  strmap_put(S->a, &S->inst_prefixes, scope_global(S, sc, local), (void *)2);
  return verr();
}

/* ---- params ---------------------------------------------------------------------------- */
Op *sema_new_param(Sema *S, const char *global, DType dt, Shape s, InitKind init, double a, double b, Loc loc) {
  Op *prev = strmap_get(&S->params, global);
  if (prev) {
    if (S->loops > 0 && loc_same(prev->loc, loc)) { /* the same statement again: a loop's next iteration (pass 71) */
      sema_err(S, loc, "param '%s' is declared again by the next iteration of its loop: a param in a loop needs a "
               "name of its own each time (declare it in a def and call that as name[i])", global);
      return NULL;
    }
    sema_err(S, loc, "param '%s' is declared twice", global);
    sema_note(S, prev->loc, "'%s' was first declared here", global);
    return NULL;
  }
  Op *op = sema_op(S, OP_PARAM, 0, NULL, loc);
  if (!op) return NULL;
  op->name = global;
  op->dtype = dt;
  op->param_type = dt;
  op->shape = s;
  op->init = init;
  op->init_a = a;
  op->init_b = b;
  strmap_put(S->a, &S->params, global, op);
  return op;
}

/* zeros | ones | normal(std) | uniform(lo, hi) */
static bool param_init(Sema *S, Scope *sc, Node *e, InitKind *k, double *a, double *b) {
  const char *name = e->kind == N_IDENT ? e->name : e->kind == N_CALL && e->a->kind == N_IDENT ? e->a->name : NULL;
  int nargs = e->kind == N_CALL ? e->list.n : 0;
  *a = *b = 0;
  if (name && !strcmp(name, "zeros") && e->kind == N_IDENT) { *k = INIT_ZEROS; return true; }
  if (name && !strcmp(name, "ones") && e->kind == N_IDENT) { *k = INIT_ONES; return true; }
  /* the ranges torch.nn.init takes (std >= 0, low <= high), finite in f32, where the
     values are drawn (a nan std trained to a nan loss that blamed an op) */
  if (name && !strcmp(name, "normal") && nargs == 1) {
    *k = INIT_NORMAL;
    Node *x = e->list.items[0]->a;
    if (!sema_const_num(S, sc, x, "normal's std", a)) return false;
    if (!(*a >= 0 && *a <= FLT_MAX)) {
      sema_err(S, x->loc, "normal's std must be a finite number >= 0, not %g", *a);
      return false;
    }
    return true;
  }
  if (name && !strcmp(name, "uniform") && nargs == 2) {
    *k = INIT_UNIFORM;
    Node *lo = e->list.items[0]->a, *hi = e->list.items[1]->a;
    if (!sema_const_num(S, sc, lo, "uniform's low", a) || !sema_const_num(S, sc, hi, "uniform's high", b)) return false;
    if (!(fabs(*a) <= FLT_MAX && fabs(*b) <= FLT_MAX && *a <= *b)) {
      sema_err(S, e->loc, "uniform(low, high) needs finite numbers with low <= high, not (%g, %g)", *a, *b);
      return false;
    }
    return true;
  }
  if (e->kind != N_ERROR) sema_err(S, e->loc, "a param's init is zeros, ones, normal(std) or uniform(lo, hi)");
  return false;
}

/* The shape of a TYPE whose dims are all compile-time ints. */
static bool const_shape(Sema *S, Scope *sc, Node *ty, Shape *s) {
  *s = (Shape){0};
  if (ty->list.n > MPL_MAX_RANK) { sema_err(S, ty->loc, "more than %d dimensions", MPL_MAX_RANK); return false; }
  for (int i = 0; i < ty->list.n; i++) {
    Node *de = ty->list.items[i];
    if (de->kind == N_ELLIPSIS) { sema_err(S, de->loc, "'...' is only allowed in a def's signature"); return false; }
    if (!sema_const_int(S, sc, de, "a dimension", &s->d[s->rank++])) return false;
  }
  return sema_check_shape(S, s, ty->loc);
}

static void apply_shard(Sema *S, Scope *sc, Node *an, Op *p) {
  int64_t dim = -1, groups = 1;
  for (int i = 0; i < an->list.n; i++) {
    Node *arg = an->list.items[i];
    if (arg->name && !strcmp(arg->name, "groups")) {
      if (!sema_const_int(S, sc, arg->a, "groups", &groups)) return;
    } else if (!arg->name && i == 0) {
      if (!sema_const_int(S, sc, arg->a, "@shard's dimension", &dim)) return;
    } else {
      sema_err(S, arg->loc, "@shard takes a dimension and optionally groups = g");
      return;
    }
  }
  if (an->list.n == 0) { sema_err(S, an->loc, "@shard needs a dimension: @shard(dim)"); return; }
  int ax = sema_norm_axis(S, dim, p->shape.rank, an->loc);
  if (ax < 0) return;
  int64_t tp = S->g->mesh.tp, size = p->shape.d[ax];
  if (groups < 1 || groups > size) {
    sema_err(S, an->loc, "groups must be at least 1 and at most the dimension's size %lld, not %lld", (long long)size,
             (long long)groups);
    return;
  }
  if (size % groups || (size / groups) % tp) {
    char buf[160];
    if (groups > 1)
      sema_err(S, an->loc, "cannot shard dimension %d of '%s' %s: %lld is not divisible into %lld groups of a multiple of tp = %lld",
               ax, p->name, shape_str(&p->shape, buf, sizeof buf), (long long)size, (long long)groups, (long long)tp);
    else
      sema_err(S, an->loc, "cannot shard dimension %d of '%s' %s: %lld is not divisible by tp = %lld",
               ax, p->name, shape_str(&p->shape, buf, sizeof buf), (long long)size, (long long)tp);
    return;
  }
  if (tp > 1) p->layout = (Layout){.split_dim = ax, .groups = (int)groups};
}

static void exec_param(Sema *S, Scope *sc, Node *st) {
  if (st->c) {
    Value c = sema_eval(S, sc, st->c);
    if (c.kind == V_ERR) { scope_bind(S, sc, st->name, verr()); return; }
    if (c.kind != V_BOOL) {
      sema_err(S, st->c->loc, "a param's condition must be a compile-time bool, not %s", sema_value_desc(S, c));
      scope_bind(S, sc, st->name, verr());
      return;
    }
    if (!c.i) {
      scope_bind(S, sc, st->name, (Value){.kind = V_NONE, .s = st->name, .loc = st->loc});
      return;
    }
  }
  DType dt;
  Shape s;
  InitKind k;
  double ia, ib;
  if (!st->a || !sema_parse_dtype(st->a->name, &dt)) {
    sema_err(S, st->a ? st->a->loc : st->loc, "a param needs a tensor type such as f32[n, m]");
    scope_bind(S, sc, st->name, verr());
    return;
  }
  if (!dtype_is_float(dt)) { /* trained by its gradient: a float */
    sema_err(S, st->a->loc, "param '%s' is %s: a param is f32, bf16 or f16 (it is trained by its gradient; an "
             "integer table is an input or a computed value)", st->name, dtype_name(dt));
    scope_bind(S, sc, st->name, verr());
    return;
  }
  if (!const_shape(S, sc, st->a, &s) || !st->b || !param_init(S, sc, st->b, &k, &ia, &ib)) {
    scope_bind(S, sc, st->name, verr());
    return;
  }
  InstName *inst = strmap_get(&sc->insts, st->name);
  if (inst) { /* an instance of that name came first (the other order: sema_instance_name) */
    sema_err(S, st->loc, "param '%s' has the name of an instance in this scope", st->name);
    sema_note(S, inst->loc, "instance '%s' is named here", st->name);
    scope_bind(S, sc, st->name, verr());
    return;
  }
  const char *global = scope_global(S, sc, st->name);
  Op *p = sema_new_param(S, global, dt, s, k, ia, ib, st->loc); /* reports a second declaration */
  if (!p) { scope_bind(S, sc, st->name, verr()); return; }
  for (int i = 0; i < st->annots.n; i++)
    if (((Node *)st->annots.items[i])->op == ANNOT_SHARD) { /* the first (apply_annots refuses a second) */
      apply_shard(S, sc, st->annots.items[i], p);
      break;
    }
  scope_bind(S, sc, st->name, vtensor(S, p));
}

/* ---- annotations ------------------------------------------------------------------------ */
static void apply_stage(Sema *S, Scope *sc, Node *an) {
  const char *what = an->op == ANNOT_STAGE ? "@stage" : "@device";
  S->any_stage_annot = true;
  if (an->list.n != 1 || an->list.items[0]->name) {
    sema_err(S, an->loc, "%s takes one stage number: %s(k)", what, what);
    return;
  }
  int64_t k;
  if (!sema_const_int(S, sc, an->list.items[0]->a, "a stage number", &k)) return;
  int n = S->g->nstages;
  if (k < 0 || k >= n) {
    /* once per place (sema_err's own dedupe is per place and text, and k differs in each
       iteration of a loop's @stage(i) past the last stage) */
    const char *at = arena_printf(S->a, "%s:%d:%d:@stage range", an->loc.file ? an->loc.file : "", an->loc.line, an->loc.col);
    if (strmap_get(&S->reported, at)) return;
    strmap_put(S->a, &S->reported, at, (void *)1);
    if (S->g->train.virtual_stages > 1)
      sema_err(S, an->loc, "%s(%lld) is out of range: pp = %d with %s gives stages 0..%d", what, (long long)k, S->g->mesh.pp, sema_chunks_text(S), n - 1);
    else
      sema_err(S, an->loc, "%s(%lld) is out of range: pp = %d gives stages 0..%d", what, (long long)k, S->g->mesh.pp, n - 1);
    sema_note_stage_origin(S); /* --mesh pp=1 over the program's pp = 2 said nothing (pass 69) */
    return;
  }
  S->place.stage = (int)k;
  S->place.stage_loc = an->loc;
}

static void apply_annots(Sema *S, Scope *sc, Node *st) {
  /* one placement, one @recompute and one @shard a statement */
  const Node *placed = NULL, *recomputed = NULL, *sharded = NULL;
  for (int i = 0; i < st->annots.n; i++) {
    Node *an = st->annots.items[i];
    bool place = an->op == ANNOT_STAGE || an->op == ANNOT_DEVICE;
    const Node **first = place                        ? &placed
                         : an->op == ANNOT_RECOMPUTE ? &recomputed
                         : an->op == ANNOT_SHARD     ? &sharded
                                                     : NULL;
    if (first && *first) {
      static const char *const name[] = {[ANNOT_STAGE] = "@stage", [ANNOT_DEVICE] = "@device",
                                         [ANNOT_RECOMPUTE] = "@recompute", [ANNOT_SHARD] = "@shard"};
      sema_err(S, an->loc, "%s after %s on the same statement: give it one %s", name[an->op], name[(*first)->op],
               place ? "placement" : an->op == ANNOT_SHARD ? "split (a param is split along one dimension)"
                                                           : "@recompute");
      continue;
    }
    if (first) *first = an;
    switch (an->op) {
    case ANNOT_STAGE: case ANNOT_DEVICE: apply_stage(S, sc, an); break;
    case ANNOT_RECOMPUTE:
      if (an->list.n) sema_err(S, an->loc, "@recompute takes no arguments");
      if (st->kind == N_PARAM) /* was a silent no-op (pass 87) */
        sema_err(S, an->loc, "@recompute applies to computed values, not a param (a param is kept); mark the statements that read it");
      S->place.recompute = ++S->recompute_regions; /* a region per run: per loop iteration */
      break;
    case ANNOT_SHARD:
      if (st->kind != N_PARAM) sema_err(S, an->loc, "@shard applies to a param declaration");
      break;
    default: break;
    }
  }
}

/* ---- statements ------------------------------------------------------------------------ */
static void exec_body_nested(Sema *S, Scope *sc, NodeList *body);
static void exec_stmt(Sema *S, Scope *sc, Node *st);

static void exec_assign(Sema *S, Scope *sc, Node *st) {
  Value v = sema_eval(S, sc, st->a);
  int n = st->list.n;
  if (v.kind == V_VOID) {
    sema_err(S, st->a->loc, "this call returns nothing");
    v = verr();
  }
  if (n == 1) {
    if (v.kind == V_TUPLE && v.n == 1) v = v.items[0]; /* split(x, 1, axis) (pass 83: refused, "bind them with 1 names") */
    if (v.kind == V_TUPLE) {
      sema_err(S, st->a->loc, "this gives %d values; bind them with %d names (a, b, ... = ...)", v.n, v.n);
      v = verr();
    }
    scope_bind(S, sc, ((Node *)st->list.items[0])->name, v);
    return;
  }
  if (v.kind != V_ERR && (v.kind != V_TUPLE || v.n != n)) {
    int got = v.kind == V_TUPLE ? v.n : 1;
    sema_err(S, st->a->loc, "%d names but %d value%s", n, got, got == 1 ? "" : "s");
    v = verr();
  }
  for (int i = 0; i < n; i++)
    scope_bind(S, sc, ((Node *)st->list.items[i])->name, v.kind == V_TUPLE ? v.items[i] : verr());
}

/* Counts one statement or loop iteration run; false (after an error) past the limit. */
static bool count_step(Sema *S, Node *st) {
  if (++S->steps <= SEMA_MAX_STEPS) return true;
  sema_err(S, st->loc, "the program is too large to unroll (more than %d statements and iterations)", SEMA_MAX_STEPS);
  S->stop = true;
  return false;
}

static void exec_for(Sema *S, Scope *sc, Node *st, bool top) {
  int64_t lo, hi;
  bool ok = sema_const_int(S, sc, st->a, "a for loop's start", &lo);
  ok &= sema_const_int(S, sc, st->b, "a for loop's end", &hi);
  if (!ok) return;
  uint64_t trips = hi > lo ? (uint64_t)hi - (uint64_t)lo : 0; /* (hi - lo may pass INT64_MAX) */
  if (trips > SEMA_MAX_TRIPS) {
    sema_err(S, st->loc, "this loop runs %llu times; at most %d iterations are unrolled", (unsigned long long)trips, SEMA_MAX_TRIPS);
    return;
  }
  for (int64_t i = lo; i < hi && !S->stop && !sc->returned; i++) {
    if (!count_step(S, st)) return;
    Place saved = S->place;
    if (top) S->seg++;
    scope_bind(S, sc, st->name, vint(i, st->loc));
    apply_annots(S, sc, st);
    S->loops++;
    exec_body_nested(S, sc, &st->body);
    S->loops--;
    S->place = saved;
  }
}

static void exec_if(Sema *S, Scope *sc, Node *st) {
  Value c = sema_eval(S, sc, st->a);
  if (c.kind == V_ERR) return;
  if (c.kind != V_BOOL) {
    sema_err(S, st->a->loc, "an if condition must be a compile-time bool, not %s", sema_value_desc(S, c));
    return;
  }
  exec_body_nested(S, sc, c.i ? &st->body : &st->else_body);
}

/* `return y, aux`: the values as one tuple, each a single value. */
static Value eval_results(Sema *S, Scope *sc, Node *st) {
  Value t = {.kind = V_TUPLE, .n = st->list.n, .loc = st->loc};
  t.items = arena_alloc(S->a, sizeof(Value) * (size_t)t.n);
  bool ok = true;
  for (int i = 0; i < t.n; i++) {
    Node *e = st->list.items[i];
    Value v = sema_eval(S, sc, e);
    if (v.kind == V_TUPLE || v.kind == V_VOID) {
      sema_err(S, e->loc, "each value after 'return' must be one value, not %s", sema_value_desc(S, v));
      v = verr();
    }
    ok &= v.kind != V_ERR;
    v.loc = e->loc; /* a result's errors point at its place in the return */
    t.items[i] = v;
  }
  return ok ? t : verr();
}

static void exec_stmt(Sema *S, Scope *sc, Node *st) {
  if (!count_step(S, st)) return;
  if (st->kind == N_FOR) { exec_for(S, sc, st, sc->is_model && sc->nest == 0); return; }
  Place saved = S->place;
  apply_annots(S, sc, st);
  switch (st->kind) {
  case N_ASSIGN: exec_assign(S, sc, st); break;
  case N_PARAM: exec_param(S, sc, st); break;
  case N_RETURN:
    sc->ret = st->list.n ? eval_results(S, sc, st) : st->a ? sema_eval(S, sc, st->a) : (Value){.kind = V_VOID};
    sc->ret_loc = st->loc;
    sc->ret_val_loc = st->a ? st->a->loc : st->loc;
    sc->returned = true;
    break;
  case N_IF: exec_if(S, sc, st); break;
  case N_BLOCK: exec_body_nested(S, sc, &st->body); break;
  case N_EXPRSTMT: sema_eval(S, sc, st->a); break;
  case N_ERROR: break;
  default: sema_err(S, st->loc, "this is not a statement (%s)", node_kind_name(st->kind)); break;
  }
  S->place = saved;
}

static void exec_body_nested(Sema *S, Scope *sc, NodeList *body) {
  sc->nest++;
  sema_exec_body(S, sc, body);
  sc->nest--;
}

/* Runs statements in order; in the model body each top-level statement (each
 * iteration of a top-level loop) is one segment for the stage balancer. */
void sema_exec_body(Sema *S, Scope *sc, NodeList *body) {
  bool top = sc->is_model && sc->nest == 0;
  for (int i = 0; i < body->n && !S->stop && !sc->returned; i++) {
    Node *st = body->items[i];
    if (top && st->kind != N_FOR) S->seg++;
    exec_stmt(S, sc, st);
    if (st->kind == N_RETURN && i + 1 < body->n) { /* once a place (a def runs at each call) */
      Loc at = body->items[i + 1]->loc;
      const char *key = arena_printf(S->a, "%s:%d:%d:after return", at.file ? at.file : "", at.line, at.col);
      if (!strmap_get(&S->reported, key)) {
        strmap_put(S->a, &S->reported, key, (void *)1);
        diag_warning(S->d, at, "this statement comes after the return and is never run%s",
                     body->items[i + 1]->kind == N_PARAM ? " (a param declared here is no param of the model)" : "");
      }
    }
  }
}

/* ---- def calls ---------------------------------------------------------------------------- */
typedef struct CallCtx {
  const char *callee;
  Shape ell;      /* the dims matched by the first `...` */
  bool ell_set;
} CallCtx;

/* Matches one dimension pattern against an actual size, binding symbolic names. */
static bool match_dim(Sema *S, Scope *nsc, Node *de, int64_t size, Loc argloc, bool *mismatch, const char **why) {
  if (de->kind == N_IDENT) {
    Binding *b = scope_find(nsc, de->name);
    if (!b) {
      scope_bind(S, nsc, de->name, vint(size, argloc));
      return true;
    }
    if (b->v.kind == V_INT && b->v.i == size) return true;
    if (b->v.kind != V_INT) { *why = arena_printf(S->a, "'%s' is not an int", de->name); return false; }
    *why = arena_printf(S->a, "%s = %lld", de->name, (long long)b->v.i);
    *mismatch = true;
    return false;
  }
  Value v = sema_eval(S, nsc, de);
  if (v.kind == V_ERR) return false;
  if (v.kind != V_INT) { sema_err(S, de->loc, "a dimension must be a compile-time int, not %s", sema_value_desc(S, v)); return false; }
  if (v.i == size) return true;
  *why = arena_printf(S->a, "%lld", (long long)v.i);
  return false;
}

/* Checks (and binds) a tensor value against a TYPE of a def's signature. */
static bool match_type(Sema *S, Scope *nsc, CallCtx *cc, Node *ty, Value v, const char *what, Loc argloc) {
  Op *op = sema_opv(S, v);
  DType dt;
  char buf[160];
  if (sema_parse_dtype(ty->name, &dt) && dt != op->dtype) {
    sema_err(S, argloc, "%s of %s must be %s, not %s", what, cc->callee, ty->name, dtype_name(op->dtype));
    sema_note(S, ty->loc, "declared here");
    return false;
  }
  if (!ty->has_dims) return true;
  int ndims = ty->list.n, ell = -1;
  for (int i = 0; i < ndims; i++)
    if (ty->list.items[i]->kind == N_ELLIPSIS) ell = ell < 0 ? i : ell;
  int fixed = ndims - (ell >= 0), r = op->shape.rank;
  const char *sh = arena_strdup(S->a, shape_str(&op->shape, buf, sizeof buf));
  if (ell < 0 ? r != fixed : r < fixed) {
    sema_err(S, argloc, "%s of %s has shape %s, but the signature wants %s%d dimensions", what, cc->callee, sh, ell >= 0 ? "at least " : "", fixed);
    sema_note(S, ty->loc, "declared here");
    return false;
  }
  int nell = ell >= 0 ? r - fixed : 0;
  if (ell >= 0) {
    Shape es = {nell, {0}};
    for (int i = 0; i < nell; i++) es.d[i] = op->shape.d[ell + i];
    if (cc->ell_set && !shape_eq(&es, &cc->ell)) {
      sema_err(S, argloc, "%s of %s has leading dimensions %s, but '...' was bound to %s", what, cc->callee, shape_str(&es, buf, sizeof buf), shape_str(&cc->ell, (char[160]){0}, 160));
      return false;
    }
    cc->ell = es;
    cc->ell_set = true;
  }
  for (int i = 0, ax = 0; i < ndims; i++) {
    Node *de = ty->list.items[i];
    if (de->kind == N_ELLIPSIS) { ax += nell; continue; }
    bool mm = false;
    const char *why = NULL;
    if (!match_dim(S, nsc, de, op->shape.d[ax], argloc, &mm, &why)) {
      if (why) {
        sema_err(S, argloc, "%s of %s has shape %s, but dimension %d should be %s", what, cc->callee, sh, ax, why);
        Binding *b = de->kind == N_IDENT ? scope_find(nsc, de->name) : NULL;
        if (mm && b) sema_note(S, b->v.loc, "dimension %s was bound here", de->name);
        else sema_note(S, de->loc, "declared here");
      }
      return false;
    }
    ax++;
  }
  return true;
}

/* Binds one argument value to its PARAMDECL in the callee's scope. */
static bool bind_arg(Sema *S, Scope *nsc, CallCtx *cc, Node *pd, Value v, Loc argloc) {
  const char *what = arena_printf(S->a, "argument '%s'", pd->name);
  Node *ty = pd->a;
  if (v.kind == V_ERR) { scope_bind(S, nsc, pd->name, v); return false; }
  if (!ty) { scope_bind(S, nsc, pd->name, v); return true; }
  const char *tn = ty->name ? ty->name : "";
  bool scalar_ty = !ty->has_dims && (!strcmp(tn, "int") || !strcmp(tn, "float") || !strcmp(tn, "bool"));
  if (scalar_ty) {
    bool ok = !strcmp(tn, "int") ? v.kind == V_INT : !strcmp(tn, "float") ? is_num(v) : v.kind == V_BOOL;
    if (!ok) {
      sema_err(S, argloc, "%s of %s must be a compile-time %s, not %s", what, cc->callee, tn, sema_value_desc(S, v));
      scope_bind(S, nsc, pd->name, verr());
      return false;
    }
    if (!strcmp(tn, "float")) v = vfloat(num_of(v), argloc);
    scope_bind(S, nsc, pd->name, v);
    return true;
  }
  if (v.kind != V_TENSOR) {
    sema_err(S, argloc, "%s of %s must be a tensor, not %s", what, cc->callee, sema_value_desc(S, v));
    scope_bind(S, nsc, pd->name, verr());
    return false;
  }
  bool ok = match_type(S, nsc, cc, ty, v, what, argloc);
  scope_bind(S, nsc, pd->name, ok ? v : verr());
  return ok;
}

static bool is_scalar_decl(Node *pd) {
  Node *ty = pd->a;
  return ty && !ty->has_dims && ty->name && (!strcmp(ty->name, "int") || !strcmp(ty->name, "float") || !strcmp(ty->name, "bool"));
}

/* Maps the call's arguments to the def's PARAMDECLs and evaluates them in the caller,
 * in the order they are written (so ops are made in source order). */
static bool collect_args(Sema *S, Scope *sc, Node *call, Node *def, const char *callee, Value *vals, Loc *locs, bool *given) {
  int np = def->list.n;
  const char **names = arena_alloc(S->a, sizeof(char *) * (size_t)(np + 1));
  Node **exprs = arena_alloc(S->a, sizeof(Node *) * (size_t)(np + 1));
  for (int j = 0; j < np; j++) names[j] = ((Node *)def->list.items[j])->name;
  bool ok = sema_bind_args(S, call, callee, names, np, -1, exprs);
  for (int i = 0; i < call->list.n; i++)
    for (int j = 0; j < np; j++) {
      Node *e = ((Node *)call->list.items[i])->a;
      if (exprs[j] != e) continue;
      given[j] = true;
      vals[j] = sema_eval(S, sc, e);
      locs[j] = e->loc;
      break;
    }
  return ok;
}

/* Checks a def's result against its `-> type` or `-> (t1, t2, ...)`: the number of
 * values, then each tensor's type (compile-time values are not checked), in sig: the
 * signature's names as the call bound them (the body may rebind them). at: the return;
 * val_at: its expression (one value's type is reported there: the value's own place may
 * be the caller's argument, returned as is). */
static bool check_result(Sema *S, Scope *sig, CallCtx *cc, Node *ty, Value *rp, Loc at, Loc val_at) {
  Value r = *rp;
  if (r.kind == V_ERR || r.kind == V_VOID) return true;
  int want = ty->kind == N_TYPES ? ty->list.n : 1, got = r.kind == V_TUPLE ? r.n : 1;
  if (want != got) {
    sema_err(S, at, "%s returns %d value%s, but its signature declares %d", cc->callee, got, got == 1 ? "" : "s", want);
    sema_note(S, ty->loc, "declared here");
    return false;
  }
  bool ok = true;
  for (int i = 0; i < want; i++) {
    Value v = r.kind == V_TUPLE ? r.items[i] : r;
    const char *what = want == 1 ? "the result" : arena_printf(S->a, "result %d", i + 1);
    Node *t = want == 1 ? ty : ty->list.items[i];
    Loc vl = want == 1 ? val_at : v.loc;
    const char *tn = t->name ? t->name : "";
    DType dt;
    if (v.kind == V_ERR) continue;
    if (!t->has_dims && (!strcmp(tn, "int") || !strcmp(tn, "float") || !strcmp(tn, "bool"))) {
      /* -> int, -> float, -> bool: a compile-time value of that kind (a float takes an int) */
      bool fits = !strcmp(tn, "int") ? v.kind == V_INT : !strcmp(tn, "float") ? is_num(v) : v.kind == V_BOOL;
      if (!fits) {
        sema_err(S, vl, "%s of %s must be a compile-time %s, not %s", what, cc->callee, tn, sema_value_desc(S, v));
        sema_note(S, t->loc, "declared here");
        ok = false;
      } else if (!strcmp(tn, "float") && v.kind == V_INT) { /* -> float returns a float, as an argument is one */
        Value f = vfloat((double)v.i, v.loc);
        if (r.kind == V_TUPLE) rp->items[i] = f;
        else *rp = f;
      }
    } else if (sema_parse_dtype(tn, &dt) && v.kind != V_TENSOR) {
      sema_err(S, vl, "%s of %s must be a tensor, not %s", what, cc->callee, sema_value_desc(S, v));
      sema_note(S, t->loc, "declared here");
      ok = false;
    } else if (v.kind == V_TENSOR) ok &= match_type(S, sig, cc, t, v, what, vl);
  }
  return ok;
}

/* Binds the arguments and runs the body in a new scope, with a frame on S->frames
 * for the errors inside it. */
/* Does a tensor argument's type of def name dimension `name` (f32[..., c])? */
static bool names_dim(const Node *def, const char *name) {
  for (int j = 0; j < def->list.n; j++) {
    const Node *ty = ((const Node *)def->list.items[j])->a;
    for (int i = 0; ty && ty->has_dims && i < ty->list.n; i++) {
      const Node *d = ty->list.items[i];
      if (d->kind == N_IDENT && !strcmp(d->name, name)) return true;
    }
  }
  return false;
}

/* Does expression e read a dimension name of a tensor argument that nsc does not hold yet
 * (a default h: int = c / 2 beside x: f32[..., c]: evaluated after the tensors bind it)? */
static bool reads_tensor_dim(const Node *def, const Node *e, Scope *nsc) {
  if (!e) return false;
  if (e->kind == N_IDENT && !scope_find(nsc, e->name) && names_dim(def, e->name)) return true;
  if (reads_tensor_dim(def, e->a, nsc) || reads_tensor_dim(def, e->b, nsc) || reads_tensor_dim(def, e->c, nsc)) return true;
  for (int i = 0; i < e->list.n; i++)
    if (reads_tensor_dim(def, e->list.items[i], nsc)) return true;
  return false;
}

static Value call_body(Sema *S, Scope *sc, Node *call, Node *def, Module *mod, const char *callee, const char *prefix) {
  int np = def->list.n;
  Value *vals = arena_alloc(S->a, sizeof(Value) * (size_t)(np + 1));
  Loc *locs = arena_alloc(S->a, sizeof(Loc) * (size_t)(np + 1));
  bool *given = arena_alloc(S->a, (size_t)np + 1);
  bool ok = collect_args(S, sc, call, def, callee, vals, locs, given), bound = ok;
  Scope *nsc = arena_alloc(S->a, sizeof *nsc);
  nsc->mod = mod;
  nsc->prefix = prefix;
  CallCtx cc = {.callee = callee};
  /* compile-time args first, then tensors, then the compile-time defaults that read a
     tensor's dimension (pass 52: def s(x: f32[..., c], h: int = c / 2) found no 'c') */
  bool *later = arena_alloc(S->a, (size_t)np + 1);
  for (int pass = 0; pass < 3; pass++)
    for (int j = 0; j < np; j++) {
      Node *pd = def->list.items[j];
      if (pass == 2 ? !later[j] : is_scalar_decl(pd) != (pass == 0)) continue;
      if (pass == 0 && !given[j] && pd->b && reads_tensor_dim(def, pd->b, nsc)) {
        later[j] = true;
        continue;
      }
      if (!given[j]) {
        if (!pd->b) { /* (not after an argument that could not be bound: it is that one) */
          if (bound) sema_err(S, call->loc, "%s needs argument '%s'", callee, pd->name);
          ok = false;
          continue;
        }
        vals[j] = sema_eval(S, nsc, pd->b);
        locs[j] = call->loc;
      }
      ok &= bind_arg(S, nsc, &cc, pd, vals[j], locs[j]);
    }
  if (!ok) return verr();
  Scope sig = *nsc; /* the signature's names as bound by the call, for the result's check */
  sig.vars = arena_alloc(S->a, sizeof(Binding) * (size_t)(nsc->nvars + 1));
  if (nsc->nvars) memcpy(sig.vars, nsc->vars, sizeof(Binding) * (size_t)nsc->nvars); /* (none: a def without params) */
  sig.capvars = nsc->nvars;
  S->frames[S->depth++] = (CallFrame){.call = call->loc, .callee = callee, .stdlib = sema_in_stdlib(def->loc)};
  sema_exec_body(S, nsc, &def->body);
  Value r = nsc->returned ? nsc->ret : (Value){.kind = V_VOID};
  if (S->stop) r = verr(); /* a limit cut the body short: no "returns nothing" after it */
  if (def->a && !check_result(S, &sig, &cc, def->a, &r, nsc->returned ? nsc->ret_loc : r.loc,
                              nsc->returned ? nsc->ret_val_loc : r.loc))
    r = verr();
  S->depth--;
  return r;
}

Value sema_call_def(Sema *S, Scope *sc, Node *call, Node *def, Module *mod, const char *callee) {
  if (S->depth >= SEMA_MAX_DEPTH) {
    sema_err(S, call->loc, "recursion too deep: more than %d nested calls (%s)", SEMA_MAX_DEPTH, callee);
    S->stop = true; /* a branching recursion would otherwise take exponential time */
    return verr();
  }
  if (++S->calls > SEMA_MAX_CALLS) { /* a recursion that calls itself twice fans out: 2^depth calls */
    sema_err(S, call->loc, "the program is too large: more than %d def calls (%s)", SEMA_MAX_CALLS, callee);
    S->stop = true;
    return verr();
  }
  const char *prefix = sc->prefix;
  if (sema_def_has_params(S, mod, def)) {
    const char *local = sema_instance_name(S, sc, call, callee);
    if (!local) return verr();
    prefix = scope_global(S, sc, local);
  } else if (call->as_name) {
    sema_err(S, call->as_name->loc, "'as' names an instance, but %s declares no params", callee);
    return verr();
  }
  const char *shown = mod->name && *mod->name ? arena_printf(S->a, "%s.%s", mod->name, callee) : callee;
  Value v = call_body(S, sc, call, def, mod, shown, prefix);
  if (v.kind == V_ERR && prefix != sc->prefix) strmap_put(S->a, &S->inst_prefixes, prefix, (void *)2);
  return v;
}
