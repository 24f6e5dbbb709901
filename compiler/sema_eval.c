/*
 * sema_eval.c — evaluation of expressions: compile-time arithmetic on ints,
 * floats and bools, name lookup, member access (nn.linear, wte.weight), calls (of
 * built-ins, sema_builtin.c, and of defs, sema_stmt.c), and the dispatch of tensor
 * operators to sema_ops.c.
 *
 * Invariants:
 *  - An operation whose operands are all compile-time values is computed here,
 *    never in the graph; int / int is C's division and overflow is an error.
 *  - Lookup order in a scope: its variables, its module's consts, defs and
 *    imports, its instance names, then the element-type names. A def body's scope
 *    has no parent, so it sees nothing of its caller.
 */
#include "sema_int.h"

#include <math.h>
#include <string.h>

static bool is_const(Value v) { return v.kind == V_INT || v.kind == V_FLOAT || v.kind == V_BOOL; }

Value sema_lookup(Sema *S, Scope *sc, const char *name, Loc loc, bool report) {
  Binding *b = scope_find(sc, name);
  if (b) { Value v = b->v; if (v.kind != V_TENSOR && v.kind != V_NONE) v.loc = loc; return v; }
  Value *c = strmap_get(&sc->mod->consts, name);
  if (c) { Value v = *c; v.loc = loc; return v; }
  Node *def = strmap_get(&sc->mod->defs, name);
  if (def) return (Value){.kind = V_DEF, .def = def, .mod = sc->mod, .loc = loc};
  Module *m = strmap_get(&sc->mod->imports, name);
  if (m) return m->broken ? verr() : (Value){.kind = V_MODULE, .mod = m, .loc = loc};
  InstName *in = strmap_get(&sc->insts, name);
  if (in && !in->array)
    return (Value){.kind = V_INST, .s = scope_global(S, sc, name), .loc = loc};
  DType dt;
  if (sema_parse_dtype(name, &dt) && strcmp(name, "int") && strcmp(name, "float"))
    return (Value){.kind = V_DTYPE, .i = dt, .loc = loc};
  if (report && name[0] >= '0' && name[0] <= '9') { /* 1_000, 1e3x: scanned as one word, as 1f1b is (pass 83) */
    bool digits = strspn(name, "0123456789_") == strlen(name);
    sema_err(S, loc, "'%s' is neither a number nor a name%s", name,
             digits ? ": write a number without '_' (1000, not 1_000)" : " (a name starts with a letter or '_')");
    return verr();
  }
  if (report) {
    Suggest g;
    sema_suggest_init(&g, name);
    for (int i = 0; i < sc->nvars; i++) sema_suggest(&g, sc->vars[i].name);
    sema_suggest_map(&g, &sc->mod->consts);
    sema_suggest_map(&g, &sc->mod->defs);
    sema_suggest_map(&g, &sc->mod->imports);
    sema_err(S, loc, "unknown name '%s'%s", name, sema_suggestion(S, &g));
  }
  return verr();
}

bool sema_const_int(Sema *S, Scope *sc, Node *e, const char *what, int64_t *out) {
  Value v = sema_eval(S, sc, e);
  if (v.kind == V_ERR) return false;
  if (v.kind != V_INT) {
    sema_err(S, e->loc, "%s must be a compile-time int, not %s", what, sema_value_desc(S, v));
    return false;
  }
  *out = v.i;
  return true;
}

bool sema_const_num(Sema *S, Scope *sc, Node *e, const char *what, double *out) {
  Value v = sema_eval(S, sc, e);
  if (v.kind == V_ERR) return false;
  if (!is_num(v)) {
    sema_err(S, e->loc, "%s must be a compile-time number, not %s", what, sema_value_desc(S, v));
    return false;
  }
  *out = num_of(v);
  return true;
}

/* int op int, with C semantics and overflow checks. */
static Value int_arith(Sema *S, int bop, int64_t x, int64_t y, Loc loc) {
  int64_t r = 0;
  bool ovf = false;
  switch (bop) {
  case BOP_ADD: ovf = __builtin_add_overflow(x, y, &r); break;
  case BOP_SUB: ovf = __builtin_sub_overflow(x, y, &r); break;
  case BOP_MUL: ovf = __builtin_mul_overflow(x, y, &r); break;
  case BOP_DIV: case BOP_MOD:
    if (y == 0) { sema_err(S, loc, "division by zero in a compile-time expression"); return verr(); }
    if (x == INT64_MIN && y == -1) { ovf = bop == BOP_DIV; break; } /* the remainder is 0 (r) */
    r = bop == BOP_DIV ? x / y : x % y;
    break;
  default: die("int_arith: op %d", bop);
  }
  if (ovf) { sema_err(S, loc, "integer overflow in a compile-time expression"); return verr(); }
  return vint(r, loc);
}

static Value float_arith(Sema *S, int bop, double x, double y, Loc loc) {
  switch (bop) {
  case BOP_ADD: return vfloat(x + y, loc);
  case BOP_SUB: return vfloat(x - y, loc);
  case BOP_MUL: return vfloat(x * y, loc);
  case BOP_DIV: return vfloat(x / y, loc);
  case BOP_MOD:
    if (y == 0) { sema_err(S, loc, "division by zero in a compile-time expression"); return verr(); }
    return vfloat(fmod(x, y), loc);
  default: die("float_arith: op %d", bop);
  }
}

static Value compare(int bop, double x, double y, Loc loc) {
  switch (bop) {
  case BOP_EQ: return vbool(x == y, loc);
  case BOP_NE: return vbool(x != y, loc);
  case BOP_LT: return vbool(x < y, loc);
  case BOP_LE: return vbool(x <= y, loc);
  case BOP_GT: return vbool(x > y, loc);
  default: return vbool(x >= y, loc);
  }
}

static bool is_cmp(int bop) { return bop >= BOP_EQ && bop <= BOP_GE; }

/* Both operands compile-time. */
static Value const_binop(Sema *S, int bop, Value a, Value b, Loc loc) {
  if (bop == BOP_AND || bop == BOP_OR) {
    if (a.kind != V_BOOL || b.kind != V_BOOL) {
      sema_err(S, loc, "'%s' needs two bools, not %s and %s", binop_str(bop), sema_value_desc(S, a), sema_value_desc(S, b));
      return verr();
    }
    return vbool(bop == BOP_AND ? a.i && b.i : a.i || b.i, loc);
  }
  if (is_cmp(bop) && a.kind == V_BOOL && b.kind == V_BOOL && (bop == BOP_EQ || bop == BOP_NE))
    return vbool(bop == BOP_EQ ? a.i == b.i : a.i != b.i, loc);
  if (a.kind == V_BOOL || b.kind == V_BOOL || bop == BOP_MATMUL) {
    sema_err(S, loc, "'%s' cannot apply to %s and %s", binop_str(bop), sema_value_desc(S, a), sema_value_desc(S, b));
    return verr();
  }
  if (is_cmp(bop)) {
    if (a.kind == V_INT && b.kind == V_INT) return vbool(bop == BOP_EQ ? a.i == b.i : bop == BOP_NE ? a.i != b.i : bop == BOP_LT ? a.i < b.i : bop == BOP_LE ? a.i <= b.i : bop == BOP_GT ? a.i > b.i : a.i >= b.i, loc);
    return compare(bop, num_of(a), num_of(b), loc);
  }
  if (a.kind == V_INT && b.kind == V_INT) return int_arith(S, bop, a.i, b.i, loc);
  return float_arith(S, bop, num_of(a), num_of(b), loc);
}

/* The graph op of an arithmetic or logical operator on tensors. */
static OpKind tensor_op_of(int bop) {
  static const OpKind k[] = {
      [BOP_ADD] = OP_ADD, [BOP_SUB] = OP_SUB, [BOP_MUL] = OP_MUL, [BOP_DIV] = OP_DIV,
      [BOP_EQ] = OP_EQ, [BOP_NE] = OP_NE, [BOP_LT] = OP_LT, [BOP_LE] = OP_LE,
      [BOP_GT] = OP_GT, [BOP_GE] = OP_GE, [BOP_AND] = OP_AND, [BOP_OR] = OP_OR,
  };
  return k[bop];
}

/* An absent optional param is the identity of + - * / and @ with a tensor; with a
 * compile-time number it stays absent (`bias * 0.5` is no term at all, as a None bias is
 * in PyTorch, not the number 0.5). */
static Value none_binop(Sema *S, int bop, Value a, Value b, Loc loc) {
  bool ident = bop == BOP_ADD || bop == BOP_SUB || bop == BOP_MUL || bop == BOP_DIV || bop == BOP_MATMUL;
  if (!ident) {
    Value n = a.kind == V_NONE ? a : b;
    sema_err(S, loc, "the optional param '%s' is absent; it can only be used in + - * / or @", n.s ? n.s : "?");
    return verr();
  }
  if (a.kind == V_NONE && b.kind == V_NONE) return a;
  if (is_const(a) || is_const(b)) return a.kind == V_NONE ? a : b;
  if (b.kind == V_NONE) return a;
  if (bop == BOP_SUB) return sema_unary(S, OP_NEG, b, loc);
  if (bop == BOP_DIV) {
    sema_err(S, loc, "the optional param '%s' is absent; it cannot be divided by a value", a.s ? a.s : "?");
    return verr();
  }
  return b;
}

Value sema_binop(Sema *S, int bop, Value a, Value b, Loc loc) {
  if (a.kind == V_ERR || b.kind == V_ERR) return verr();
  if (is_const(a) && is_const(b)) return const_binop(S, bop, a, b, loc);
  if (a.kind == V_NONE || b.kind == V_NONE) return none_binop(S, bop, a, b, loc);
  bool ta = a.kind == V_TENSOR, tb = b.kind == V_TENSOR;
  if (!(ta || tb) || !(ta || is_const(a)) || !(tb || is_const(b))) {
    sema_err(S, loc, "'%s' cannot apply to %s and %s", binop_str(bop), sema_value_desc(S, a), sema_value_desc(S, b));
    return verr();
  }
  if (bop == BOP_MATMUL) return sema_matmul(S, a, b, false, false, loc);
  if (bop == BOP_MOD) return sema_rem(S, a, b, loc);
  if (bop == BOP_DIV) return sema_div(S, a, b, loc);
  return sema_binary(S, tensor_op_of(bop), a, b, loc, binop_str(bop));
}

/* `transpose(w, i, j)` as a matmul operand. Returns 0 if e is no such call
 * (nothing evaluated); 1 if it swaps the last two dims: *out is w itself and the
 * product folds the transpose (ta / tb); 2 otherwise: *out is the transpose. */
static int transpose_operand(Sema *S, Scope *sc, Node *e, Value *out) {
  if (e->kind != N_CALL || e->a->kind != N_IDENT || strcmp(e->a->name, "transpose")) return 0;
  if (strmap_get(&sc->mod->defs, "transpose") || e->as_name || e->list.n != 3) return 0;
  for (int i = 0; i < 3; i++)
    if (e->list.items[i]->name) return 0;
  Value x = sema_eval(S, sc, e->list.items[0]->a);
  Value p = sema_eval(S, sc, e->list.items[1]->a), q = sema_eval(S, sc, e->list.items[2]->a);
  int r = x.kind == V_TENSOR ? S->g->ops[x.op]->shape.rank : 0;
  if (r >= 2 && p.kind == V_INT && q.kind == V_INT) {
    int64_t i = p.i < 0 ? p.i + r : p.i, j = q.i < 0 ? q.i + r : q.i;
    if ((i == r - 2 && j == r - 1) || (i == r - 1 && j == r - 2)) {
      *out = x;
      return 1;
    }
  }
  *out = sema_transpose(S, x, p, q, e->loc);
  return 2;
}

static Value eval_matmul(Sema *S, Scope *sc, Node *e) {
  Value a, b;
  int fa = transpose_operand(S, sc, e->a, &a);
  if (!fa) a = sema_eval(S, sc, e->a);
  int fb = transpose_operand(S, sc, e->b, &b);
  if (!fb) b = sema_eval(S, sc, e->b);
  if (fa != 1 && fb != 1) return sema_binop(S, BOP_MATMUL, a, b, e->loc);
  if (a.kind == V_ERR || b.kind == V_ERR) return verr();
  if (a.kind != V_TENSOR || b.kind != V_TENSOR) { /* unfold: the other side is no tensor */
    if (fa == 1) a = sema_transpose(S, a, vint(-2, e->loc), vint(-1, e->loc), e->a->loc);
    if (fb == 1) b = sema_transpose(S, b, vint(-2, e->loc), vint(-1, e->loc), e->b->loc);
    return sema_binop(S, BOP_MATMUL, a, b, e->loc);
  }
  return sema_matmul(S, a, b, fa == 1, fb == 1, e->loc);
}

static Value eval_binop(Sema *S, Scope *sc, Node *e) {
  if (e->op == BOP_MATMUL) return eval_matmul(S, sc, e);
  Value a = sema_eval(S, sc, e->a);
  if ((e->op == BOP_AND || e->op == BOP_OR) && a.kind == V_BOOL) {
    /* short circuit on compile-time bools */
    if ((e->op == BOP_AND && !a.i) || (e->op == BOP_OR && a.i)) return vbool(a.i, e->loc);
  }
  Value b = sema_eval(S, sc, e->b);
  return sema_binop(S, e->op, a, b, e->loc);
}

static Value eval_unop(Sema *S, Scope *sc, Node *e) {
  Value a = sema_eval(S, sc, e->a);
  if (a.kind == V_ERR) return a;
  if (e->op == UOP_NEG) {
    if (a.kind == V_INT) {
      if (a.i == INT64_MIN) { sema_err(S, e->loc, "integer overflow in a compile-time expression"); return verr(); }
      return vint(-a.i, e->loc);
    }
    if (a.kind == V_FLOAT) return vfloat(-a.f, e->loc);
    if (a.kind == V_TENSOR) return sema_unary(S, OP_NEG, a, e->loc);
    if (a.kind == V_NONE) return a;
  } else {
    if (a.kind == V_BOOL) return vbool(!a.i, e->loc);
    if (a.kind == V_TENSOR) return sema_unary(S, OP_NOT, a, e->loc);
  }
  sema_err(S, e->loc, "'%s' cannot apply to %s", e->op == UOP_NEG ? "-" : "not", sema_value_desc(S, a));
  return verr();
}

/* obj.name: a module's def or const, or an instance's param or sub-instance. */
static Value eval_member(Sema *S, Scope *sc, Node *e) {
  Value o;
  if (e->a->kind == N_IDENT && strmap_get(&sc->insts, e->a->name) && !scope_find(sc, e->a->name))
    o = (Value){.kind = V_INST, .s = scope_global(S, sc, e->a->name)};
  else
    o = sema_eval(S, sc, e->a);
  if (o.kind == V_ERR) return o;
  if (o.kind == V_MODULE) {
    Node *def = strmap_get(&o.mod->defs, e->name);
    if (def) return (Value){.kind = V_DEF, .def = def, .mod = o.mod, .loc = e->loc};
    Value *c = strmap_get(&o.mod->consts, e->name);
    if (c) { Value v = *c; v.loc = e->loc; return v; }
    if (o.mod->loading)
      sema_err(S, e->loc, "module '%s' is still being loaded here (its imports lead back to it), and no def or "
               "const '%s' of it has been read yet: declare it before the import, or break the cycle",
               o.mod->name, e->name);
    else {
      Suggest g;
      sema_suggest_init(&g, e->name);
      sema_suggest_map(&g, &o.mod->defs);
      sema_suggest_map(&g, &o.mod->consts);
      sema_err(S, e->loc, "module '%s' has no def or const '%s'%s", o.mod->name, e->name, sema_suggestion(S, &g));
    }
    return verr();
  }
  if (o.kind == V_INST) {
    const char *full = arena_printf(S->a, "%s.%s", o.s, e->name);
    Op *p = strmap_get(&S->params, full);
    if (p) { Value v = vtensor(S, p); return v; }
    if (strmap_get(&S->inst_prefixes, full)) return (Value){.kind = V_INST, .s = full, .loc = e->loc};
    /* an instance whose call failed was reported there, not again at each use */
    if (strmap_get(&S->inst_prefixes, o.s) != (void *)2)
      sema_err(S, e->loc, "instance '%s' has no param '%s'", o.s, e->name);
    return verr();
  }
  sema_err(S, e->loc, "%s has no member '%s'", sema_value_desc(S, o), e->name);
  return verr();
}

static Value eval_call(Sema *S, Scope *sc, Node *e) {
  Node *c = e->a;
  if (c->kind == N_IDENT) {
    Node *def = strmap_get(&sc->mod->defs, c->name);
    if (def) return sema_call_def(S, sc, e, def, sc->mod, c->name);
    bool found = false;
    Value v = sema_builtin(S, sc, e, c->name, &found);
    if (found) return v;
    Value o = sema_lookup(S, sc, c->name, c->loc, false);
    if (o.kind == V_DEF) return sema_call_def(S, sc, e, o.def, o.mod, o.def->name); /* g = nn.linear; g(x, 8) */
    if (o.kind == V_ERR) {
      const char *in_mod = NULL; /* linear(x, 8) after import nn: nn.linear */
      const StrMap *im = &sc->mod->imports;
      for (int i = 0; i < im->cap && !in_mod; i++)
        if (im->keys[i] && strmap_get(&((Module *)im->vals[i])->defs, c->name)) in_mod = im->keys[i];
      Suggest g;
      sema_suggest_init(&g, c->name);
      sema_suggest_map(&g, &sc->mod->defs);
      sema_suggest_builtins(&g); /* sofmax: softmax (pass 87) */
      if (in_mod) sema_err(S, c->loc, "unknown function '%s' (did you mean '%s.%s'?)", c->name, in_mod, c->name);
      else sema_err(S, c->loc, "unknown function '%s'%s", c->name, sema_suggestion(S, &g));
    }
    else sema_err(S, c->loc, "'%s' is %s, not a function", c->name, sema_value_desc(S, o));
    return verr();
  }
  if (c->kind == N_MEMBER) {
    Value f = eval_member(S, sc, c);
    if (f.kind == V_ERR) return f;
    if (f.kind == V_DEF) return sema_call_def(S, sc, e, f.def, f.mod, f.def->name);
    sema_err(S, c->loc, "%s is not a function", sema_value_desc(S, f));
    return verr();
  }
  if (c->kind != N_ERROR) sema_err(S, c->loc, "this expression cannot be called");
  return verr();
}

/* `h[i]` where h names an array of instances. */
static Value eval_index(Sema *S, Scope *sc, Node *e) {
  if (e->a->kind == N_IDENT && !scope_find(sc, e->a->name)) {
    InstName *in = strmap_get(&sc->insts, e->a->name);
    if (in && in->array && e->list.n == 1) {
      int64_t i;
      if (!sema_const_int(S, sc, e->list.items[0], "an instance index", &i)) return verr();
      const char *local = arena_printf(S->a, "%s.%lld", e->a->name, (long long)i);
      if (!strmap_get(&sc->insts, local)) {
        sema_err(S, e->loc, "there is no instance '%s'", local);
        return verr();
      }
      return (Value){.kind = V_INST, .s = scope_global(S, sc, local), .loc = e->loc};
    }
  }
  Value x = sema_eval(S, sc, e->a);
  if (x.kind == V_ERR) return x;
  return sema_index(S, sc, e, x);
}

Value sema_eval(Sema *S, Scope *sc, Node *e) {
  if (S->stop || !e) return verr();
  switch (e->kind) {
  case N_INT: return vint(e->ival, e->loc);
  case N_FLOAT: return vfloat(e->fval, e->loc);
  case N_BOOL: return vbool(e->ival != 0, e->loc);
  case N_STRING: return (Value){.kind = V_STR, .s = e->sval, .loc = e->loc};
  case N_IDENT: return sema_lookup(S, sc, e->name, e->loc, true);
  case N_MEMBER: return eval_member(S, sc, e);
  case N_BINOP: return eval_binop(S, sc, e);
  case N_UNOP: return eval_unop(S, sc, e);
  case N_CALL: return eval_call(S, sc, e);
  case N_INDEX: return eval_index(S, sc, e);
  case N_SLICE: case N_ELLIPSIS:
    sema_err(S, e->loc, "'%s' is only allowed inside [ ]", e->kind == N_SLICE ? ":" : "...");
    return verr();
  case N_ERROR: return verr();
  default:
    sema_err(S, e->loc, "this is not an expression (%s)", node_kind_name(e->kind));
    return verr();
  }
}
