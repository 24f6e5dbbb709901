/*
 * sema_util.c — what every file of the front end uses, at the bottom of it (it calls
 * no other sema_*.c file): the string map, diagnostics, descriptions of values for
 * messages, the constructors of compile-time values, and the binding of a call's
 * arguments to parameter names (built-ins, defs, the train block's calls).
 *
 * Invariants:
 *  - The same error at the same place (a def body instantiated many times) is
 *    reported once; its notes are dropped with it.
 *  - An error inside a stdlib def is reported at the user's call that led there,
 *    with a note at the stdlib line; one inside a def of the user's keeps its
 *    place and notes the call that ran it (after the error's own notes).
 */
#include "sema_int.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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

/* ---- suggestions ------------------------------------------------------------ */

/* The edit distance of a and b (insertions, deletions, substitutions; case ignored), capped
 * at 3: names longer than 31 bytes compare only exactly. */
static int name_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 31 || lb > 31) return strcasecmp(a, b) ? 3 : 0;
  int d[32][32];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int sub = d[i - 1][j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
      int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
      d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
  return d[la][lb] < 3 ? d[la][lb] : 3;
}

/* PyTorch's and Python's spellings of the language's names. */
static const char *const name_aliases[][2] = {
    {"True", "true"},       {"False", "false"},     {"float32", "f32"},   {"float", "f32"},
    {"float16", "f16"},     {"half", "f16"},        {"bfloat16", "bf16"}, {"int32", "i32"},
    {"int", "i32"},         {"int64", "i32"},       {"long", "i32"},      {"bool_", "bool"},
    {"keepdim", "keepdims"}, {"dim", "axis"},       {"range", "a..b"},    {"len", "a dimension's name"},
    /* PyTorch's functions the language spells otherwise (pass 87) */
    {"cat", "concat"},       {"max", "amax(x, axis) for a reduction, maximum(a, b) elementwise"},
    {"min", "minimum(a, b) elementwise, or -amax(-x, axis) for a reduction"},
    {"clamp", "maximum(minimum(x, hi), lo)"}, {"clip", "maximum(minimum(x, hi), lo)"},
    {"zeros", "full(0.0, d0, ...)"}, {"ones", "full(1.0, d0, ...)"}, {"matmul", "a @ b"},
};

void sema_suggest_init(Suggest *g, const char *name) { *g = (Suggest){name, NULL, 3}; }

/* Offers candidate c for the unknown name: kept if nearer than the best so far (at most 2
 * edits, and fewer than half the name's length: "x" is no typo of "y"). */
void sema_suggest(Suggest *g, const char *c) {
  if (!c || !strcmp(c, g->name)) return;
  int d = name_distance(g->name, c);
  if (d < g->dist && d <= 2 && (size_t)d * 2 < strlen(g->name)) g->best = c, g->dist = d;
}

void sema_suggest_map(Suggest *g, const StrMap *m) {
  for (int i = 0; i < m->cap; i++)
    if (m->keys[i]) sema_suggest(g, m->keys[i]);
}

/* "; did you mean 'x'?" (or the language's form of a Python name), or "". */
const char *sema_suggestion(Sema *S, const Suggest *g) {
  for (size_t i = 0; i < sizeof name_aliases / sizeof *name_aliases; i++)
    if (!strcmp(g->name, name_aliases[i][0]))
      return strchr(name_aliases[i][1], ' ') || strchr(name_aliases[i][1], '.')
                 ? arena_printf(S->a, " (write %s)", name_aliases[i][1])
                 : arena_printf(S->a, " (did you mean '%s'?)", name_aliases[i][1]);
  return g->best ? arena_printf(S->a, " (did you mean '%s'?)", g->best) : "";
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
void sema_flush_called_from(Sema *S) {
  if (S->called_from.line) diag_note(S->d, S->called_from, "%s is called from here", S->called_from_def);
  S->called_from = (Loc){0};
}

/* Reports msg at loc, or at site's user call with a note at loc; then, when a def of
 * the user's is being run (caller >= 0), where it was called. Once per place and text. */
static void report(Sema *S, Loc loc, const CallSite *site, int caller, const char *msg) {
  sema_flush_called_from(S);
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

/* ---- compile-time values ------------------------------------------------------ */
Value vint(int64_t i, Loc loc) { return (Value){.kind = V_INT, .i = i, .loc = loc}; }
/* A NaN is kept without its sign (x86's 0.0 / 0.0 sets it), so messages say "nan", not "-nan". */
Value vfloat(double f, Loc loc) { return (Value){.kind = V_FLOAT, .f = isnan(f) ? NAN : f, .loc = loc}; }
Value vbool(bool b, Loc loc) { return (Value){.kind = V_BOOL, .i = b, .loc = loc}; }
Value verr(void) { return (Value){.kind = V_ERR}; }
bool is_num(Value v) { return v.kind == V_INT || v.kind == V_FLOAT; }
double num_of(Value v) { return v.kind == V_INT ? (double)v.i : v.f; }

/* ---- argument binding ------------------------------------------------------------ */

/* Binds the positional then the keyword arguments of call to params[0..np): out[j]
 * becomes the expression given for params[j], or stays NULL. Every argument too
 * many, unknown keyword and argument given twice is reported; then, if nreq >= 0,
 * a missing one of the first nreq params. An extra positional argument reads
 * "takes at most N arguments" when 0 <= nreq < np, else "takes N arguments"
 * (nreq < 0: a def's call, whose caller fills the missing params from defaults).
 * False after an error. */
bool sema_bind_args(Sema *S, Node *call, const char *fn, const char *const *params, int np, int nreq, Node **out) {
  bool ok = true, keywords = false;
  int pos = 0;
  for (int i = 0; i < call->list.n; i++) {
    Node *arg = call->list.items[i];
    int slot = -1;
    keywords |= arg->name != NULL;
    if (!arg->name && keywords) { /* as Python: f(x, s = 2, 3) is an error, not 3 given to the next slot */
      if (ok)
        sema_err(S, arg->loc, "a positional argument of %s after a keyword argument: give it by name, or before the keywords", fn);
      ok = false;
      continue;
    }
    if (!arg->name) {
      if (pos >= np) {
        sema_err(S, arg->loc, "%s takes %s%d argument%s", fn, nreq >= 0 && nreq < np ? "at most " : "", np, np == 1 ? "" : "s");
        ok = false;
        continue;
      }
      slot = pos++;
    } else {
      for (int j = 0; j < np; j++)
        if (!strcmp(params[j], arg->name)) slot = j;
      if (slot < 0) {
        Suggest g;
        sema_suggest_init(&g, arg->name);
        for (int j = 0; j < np; j++) sema_suggest(&g, params[j]);
        sema_err(S, arg->loc, "%s has no argument '%s'%s", fn, arg->name, sema_suggestion(S, &g));
        ok = false;
        continue;
      }
    }
    if (out[slot]) { sema_err(S, arg->loc, "argument '%s' of %s is given twice", params[slot], fn); ok = false; continue; }
    out[slot] = arg->a;
  }
  for (int j = 0; ok && j < nreq; j++)
    if (!out[j]) { sema_err(S, call->loc, "%s needs argument '%s'", fn, params[j]); ok = false; }
  return ok;
}
