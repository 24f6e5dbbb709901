/*
 * sema_train.c — the mesh declaration, the train block (one handler per key in
 * the TRAIN_KEYS table) and the command-line overrides (--mesh, --schedule,
 * --microbatches), into Graph.mesh, Graph.train and Graph.nstages.
 *
 * Invariants:
 *  - Every key of LANGUAGE.md's train table has its documented default.
 *  - After sema_train_overrides: nstages = pp * v, and S->B = batch /
 *    (microbatches * dp), S->T = seq (at least 1, even after an error, so the
 *    model can still be checked).
 */
#include "sema_int.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static Scope *main_scope(Sema *S) {
  Scope *sc = arena_alloc(S->a, sizeof *sc);
  sc->mod = S->main;
  sc->prefix = "";
  return sc;
}

static bool pos_int(Sema *S, Scope *sc, Node *e, const char *what, int64_t lo, int64_t *out) {
  if (!sema_const_int(S, sc, e, what, out)) return false;
  if (*out < lo) {
    sema_err(S, e->loc, "%s must be at least %lld, not %lld", what, (long long)lo, (long long)*out);
    return false;
  }
  return true;
}

void sema_mesh(Sema *S, Node *mesh) {
  Mesh m = {1, 1, 1};
  static const char *const axes[] = {"dp", "pp", "tp"};
  if (mesh) {
    Scope *sc = main_scope(S);
    bool seen[3] = {false, false, false};
    for (int i = 0; i < mesh->list.n; i++) {
      Node *arg = mesh->list.items[i];
      if (!arg->name) { /* mesh(2) read as dp = 2, where pp was as likely meant */
        sema_err(S, arg->loc, "mesh axes are named: mesh(dp = a, pp = b, tp = c)");
        continue;
      }
      int ax = -1;
      for (int k = 0; k < 3; k++)
        if (!strcmp(arg->name, axes[k])) ax = k;
      if (ax < 0) {
        sema_err(S, arg->loc, "mesh axes are dp, pp and tp%s%s", arg->name ? ", not " : "", arg->name ? arg->name : "");
        continue;
      }
      if (seen[ax]) {
        sema_err(S, arg->loc, "mesh axis %s is given twice", axes[ax]);
        continue;
      }
      seen[ax] = true;
      int64_t v;
      if (!pos_int(S, sc, arg->a, arena_printf(S->a, "mesh axis %s", axes[ax]), 1, &v)) continue;
      if (v > 65536) { sema_err(S, arg->a->loc, "mesh axis %s = %lld is too large", axes[ax], (long long)v); continue; }
      if (ax == 1) S->mesh_pp_loc = arg->loc;
      if (ax == 0) m.dp = (int)v; else if (ax == 1) m.pp = (int)v; else m.tp = (int)v;
    }
  }
  if (S->opt->mesh_set) {
    if (S->opt->mesh.dp > 0) m.dp = S->opt->mesh.dp;
    if (S->opt->mesh.pp > 0) m.pp = S->opt->mesh.pp;
    if (S->opt->mesh.tp > 0) m.tp = S->opt->mesh.tp;
  }
  /* each axis is at most 65536: the product fits */
  if ((int64_t)m.dp * m.tp * m.pp > MPL_MAX_WORLD) {
    sema_err(S, S->mesh_pp_loc.line ? S->mesh_pp_loc : (Loc){0}, "mesh dp = %d x tp = %d x pp = %d is %lld ranks: at most %d",
             m.dp, m.tp, m.pp, (long long)m.dp * m.tp * m.pp, MPL_MAX_WORLD);
    m.dp = m.tp = 1;
  }
  S->g->mesh = m;
}

/* ---- train keys ---------------------------------------------------------------- */
static const char *callee_name(Node *e) {
  if (e->kind == N_IDENT) return e->name;
  if (e->kind == N_CALL && e->a->kind == N_IDENT) return e->a->name;
  return NULL;
}

/* Binds the arguments of fn(...) to names (all optional); a bare fn binds none. */
static bool train_call_args(Sema *S, Node *e, const char *fn, const char *const *names, int n, Node **out) {
  return e->kind != N_CALL || sema_bind_args(S, e, fn, names, n, 0, out);
}

/* An optimizer's or a schedule's number, given: finite in f32, where the update computes
 * (an lr of inf or 1e40 made the first step's lr nan); the ranges are the callers'. */
static bool opt_num(Sema *S, Scope *sc, Node *e, const char *name, double *out) {
  if (!e) return true;
  if (!sema_const_num(S, sc, e, name, out)) return false;
  if (fabs(*out) <= FLT_MAX) return true;
  sema_err(S, e->loc, "%s must be a finite number (within f32's range), not %g", name, *out);
  return false;
}

static bool is_tokens(Node *e) {
  const char *fn = callee_name(e);
  return fn && e->kind == N_CALL && !strcmp(fn, "tokens") && e->list.n == 1;
}

/* tokens("file.bin"): the file name (arena text), or NULL after an error. */
static const char *tokens_path(Sema *S, Scope *sc, Node *e) {
  Value v = sema_eval(S, sc, ((Node *)e->list.items[0])->a);
  if (v.kind == V_STR && v.s[0]) return v.s;
  if (v.kind == V_STR) sema_err(S, e->loc, "tokens needs a file name, not an empty string");
  else if (v.kind != V_ERR) sema_err(S, e->loc, "tokens needs a file name in quotes");
  return NULL;
}

static void key_data(Sema *S, Scope *sc, Node *e) {
  TrainConfig *t = &S->g->train;
  const char *fn = callee_name(e);
  if (is_tokens(e)) {
    const char *path = tokens_path(S, sc, e);
    if (path) t->data_kind = DATA_TOKENS, t->data_path = (char *)path, S->data_loc = e->loc;
    return;
  }
  if (fn && e->kind == N_CALL && !strcmp(fn, "synthetic") && e->list.n == 1) {
    int64_t n;
    if (pos_int(S, sc, ((Node *)e->list.items[0])->a, "synthetic's example count", 1, &n)) {
      t->data_kind = DATA_SYNTHETIC;
      t->synthetic_n = n;
    }
    return;
  }
  sema_err(S, e->loc, "data is tokens(\"file.bin\") or synthetic(n)");
}

static void key_int(Sema *S, Scope *sc, Node *e, const char *key, int64_t lo, int64_t *out) {
  int64_t v;
  if (pos_int(S, sc, e, key, lo, &v)) *out = v;
}

static void key_batch(Sema *S, Scope *sc, Node *e) { key_int(S, sc, e, "batch", 1, &S->g->train.batch); S->batch_loc = e->loc; }
static void key_seq(Sema *S, Scope *sc, Node *e) { key_int(S, sc, e, "seq", 1, &S->g->train.seq); S->seq_loc = e->loc; }
/* at most MPL_MAX_MICROBATCHES, as mplrun's job reader (and --microbatches) */
static void key_microbatches(Sema *S, Scope *sc, Node *e) {
  int64_t v;
  if (!pos_int(S, sc, e, "microbatches", 1, &v)) return;
  if (v > MPL_MAX_MICROBATCHES) sema_err(S, e->loc, "microbatches = %lld: at most %d", (long long)v, MPL_MAX_MICROBATCHES);
  else S->g->train.microbatches = v;
}
static void key_steps(Sema *S, Scope *sc, Node *e) { key_int(S, sc, e, "steps", 1, &S->g->train.steps); }

/* val = tokens("file.bin"): the validation data (that it goes with token data is checked
 * once every key is read: sema_train). */
static void key_val(Sema *S, Scope *sc, Node *e) {
  if (!is_tokens(e)) {
    sema_err(S, e->loc, "val is tokens(\"file.bin\"): validation reads an llm.c token file");
    return;
  }
  const char *path = tokens_path(S, sc, e);
  if (path) S->g->train.val_path = (char *)path;
}

static void key_eval_every(Sema *S, Scope *sc, Node *e) { key_int(S, sc, e, "eval_every", 1, &S->g->train.eval_every); }

static void key_eval_batches(Sema *S, Scope *sc, Node *e) {
  int64_t v;
  if (!pos_int(S, sc, e, "eval_batches", 1, &v)) return;
  if (v > (1 << 30)) { sema_err(S, e->loc, "eval_batches = %lld is too large", (long long)v); return; }
  S->g->train.eval_batches = v;
}

static void key_seed(Sema *S, Scope *sc, Node *e) {
  int64_t v;
  if (pos_int(S, sc, e, "seed", 0, &v)) S->g->train.seed = (uint64_t)v;
}

static void key_zero(Sema *S, Scope *sc, Node *e) {
  int64_t v;
  if (!sema_const_int(S, sc, e, "zero", &v)) return;
  if (v != 0 && v != 1) { sema_err(S, e->loc, "zero is 0 or 1, not %lld", (long long)v); return; }
  S->g->train.zero = (int)v;
}

static void key_grad_clip(Sema *S, Scope *sc, Node *e) {
  double v;
  if (!sema_const_num(S, sc, e, "grad_clip", &v)) return;
  if (!(v > 0)) { sema_err(S, e->loc, "grad_clip must be positive, not %g (leave it out for no clipping)", v); return; }
  S->g->train.grad_clip = v;
}

/* sequential | gpipe | 1f1b | interleaved(v) | zb | zbv, from a word and an optional v
 * (zbv: two model chunks per rank). */
static bool set_schedule(Sema *S, const char *name, int64_t v, bool has_v) {
  for (int k = 0; k < SCHED__COUNT; k++) {
    if (strcmp(name, mpl_sched_name(k))) continue;
    if ((k == SCHED_INTERLEAVED) != has_v) return false;
    S->g->train.schedule = (SchedKind)k;
    S->g->train.virtual_stages = has_v ? (int)v : k == SCHED_ZBV ? 2 : 1;
    return true;
  }
  return false;
}

static void key_schedule(Sema *S, Scope *sc, Node *e) {
  const char *fn = callee_name(e);
  S->sched_loc = e->loc;
  int64_t v = 0;
  bool has_v = e->kind == N_CALL;
  if (fn && has_v && e->list.n == 1 && !pos_int(S, sc, ((Node *)e->list.items[0])->a, "interleaved's v", 1, &v)) return;
  if (v > 64) { sema_err(S, e->loc, "interleaved(%lld): at most 64 chunks per rank", (long long)v); return; }
  if (fn && (!has_v || e->list.n == 1) && set_schedule(S, fn, v, has_v)) return;
  sema_err(S, e->loc, "schedule is sequential, gpipe, 1f1b, interleaved(v), zb or zbv");
}

static void key_optimizer(Sema *S, Scope *sc, Node *e) {
  TrainConfig *t = &S->g->train;
  const char *fn = callee_name(e);
  static const char *const sgd[] = {"lr", "momentum"};
  static const char *const adamw[] = {"lr", "beta1", "beta2", "eps", "weight_decay"};
  Node *a[5] = {0};
  bool ok[5] = {0}; /* each number's range is checked once it is a finite number (a nan lr is not also "not positive") */
  if (fn && !strcmp(fn, "sgd")) {
    if (!train_call_args(S, e, "sgd", sgd, 2, a)) return;
    t->optimizer = OPT_SGD;
    t->weight_decay = 0;
    ok[0] = opt_num(S, sc, a[0], "lr", &t->lr);
    ok[1] = opt_num(S, sc, a[1], "momentum", &t->momentum);
  } else if (fn && !strcmp(fn, "adamw")) {
    if (!train_call_args(S, e, "adamw", adamw, 5, a)) return;
    t->optimizer = OPT_ADAMW;
    ok[0] = opt_num(S, sc, a[0], "lr", &t->lr);
    ok[1] = opt_num(S, sc, a[1], "beta1", &t->beta1);
    ok[2] = opt_num(S, sc, a[2], "beta2", &t->beta2);
    ok[3] = opt_num(S, sc, a[3], "eps", &t->eps);
    ok[4] = opt_num(S, sc, a[4], "weight_decay", &t->weight_decay);
  } else {
    sema_err(S, e->loc, "optimizer is sgd(lr, momentum) or adamw(lr, beta1, beta2, eps, weight_decay)");
    return;
  }
  /* lr = 0 as torch.optim allows it (pass 83): params that stay, an --init evaluated or sampled */
  if (ok[0] && !(t->lr >= 0)) sema_err(S, e->loc, "the learning rate must not be negative, not %g", t->lr);
  else if (ok[0] && t->lr > 0 && !((float)t->lr > 0)) /* the update computes in f32: 1e-46 would be 0, the params never moving */
    sema_err(S, e->loc, "the learning rate %g is 0 in f32 (the update's precision): at least %g", t->lr, (double)FLT_TRUE_MIN);
  /* the ranges torch.optim accepts: outside them the update divides by zero or decays upwards */
  if (t->optimizer == OPT_SGD && ok[1] && !(t->momentum >= 0))
    sema_err(S, e->loc, "sgd's momentum must not be negative, not %g", t->momentum);
  if (t->optimizer != OPT_ADAMW) return;
  if (ok[1] && !(t->beta1 >= 0 && t->beta1 < 1)) sema_err(S, e->loc, "adamw's beta1 must be in [0, 1), not %g", t->beta1);
  if (ok[2] && !(t->beta2 >= 0 && t->beta2 < 1)) sema_err(S, e->loc, "adamw's beta2 must be in [0, 1), not %g", t->beta2);
  if (ok[3] && !(t->eps >= 0)) sema_err(S, e->loc, "adamw's eps must not be negative, not %g", t->eps);
  else if (ok[3] && t->eps == 0) /* torch.optim accepts it: 0 / (0 + 0) */
    diag_warning(S->d, a[3] ? a[3]->loc : e->loc, "adamw's eps = 0: a param element whose gradient is 0 (an embedding "
                 "row no batch reads) is updated by 0 / 0 and becomes nan");
  if (ok[4] && !(t->weight_decay >= 0))
    sema_err(S, e->loc, "adamw's weight_decay must not be negative, not %g", t->weight_decay);
}

static void key_lr_schedule(Sema *S, Scope *sc, Node *e) {
  TrainConfig *t = &S->g->train;
  const char *fn = callee_name(e);
  static const char *const cos[] = {"warmup", "min_lr"};
  Node *a[2] = {0};
  if (fn && !strcmp(fn, "constant")) { /* constant or constant() */
    if (train_call_args(S, e, "constant", cos, 0, a)) t->lr_schedule = LR_CONSTANT;
    return;
  }
  if (fn && !strcmp(fn, "cosine")) { /* cosine alone: every argument's default */
    if (!train_call_args(S, e, "cosine", cos, 2, a)) return;
    t->lr_schedule = LR_COSINE;
    if (a[0]) pos_int(S, sc, a[0], "warmup", 0, &t->warmup);
    if (opt_num(S, sc, a[1], "min_lr", &t->min_lr) && !(t->min_lr >= 0))
      sema_err(S, e->loc, "cosine's min_lr must not be negative, not %g", t->min_lr);
    return;
  }
  sema_err(S, e->loc, "lr_schedule is constant or cosine(warmup, min_lr)");
}

/* f32 | tf32 | bf16: the PrecKind, or -1. */
static int prec_of(const char *name) {
  for (int p = PREC_F32; name && p <= PREC_BF16; p++)
    if (!strcmp(name, mpl_prec_name(p))) return p;
  return -1;
}

/* precision = f32 | tf32 | bf16 (LANGUAGE.md, "Precision"): a word, not a type. */
static void key_precision(Sema *S, Scope *sc, Node *e) {
  int p = prec_of(e->kind == N_IDENT ? e->name : NULL);
  if (p < 0) sema_err(S, e->loc, "precision is f32, tf32 or bf16");
  else S->g->train.precision = (PrecKind)p;
}

/* ORDER: none; keys are looked up by name. */
#define TRAIN_KEYS(X)                                                            \
  X(data) X(batch) X(seq) X(microbatches) X(schedule) X(optimizer)              \
  X(lr_schedule) X(grad_clip) X(zero) X(steps) X(seed) X(val) X(eval_every)    \
  X(eval_batches) X(precision)

static const struct {
  const char *name;
  void (*fn)(Sema *, Scope *, Node *);
} train_keys[] = {
#define X(k) {#k, key_##k},
    TRAIN_KEYS(X)
#undef X
};

static void train_defaults(TrainConfig *t) {
  *t = (TrainConfig){
      .data_kind = DATA_SYNTHETIC, .synthetic_n = 1024, .batch = 8, .seq = 64, .microbatches = 1,
      .schedule = SCHED_1F1B, .virtual_stages = 1, .optimizer = OPT_ADAMW, .lr = 1e-3,
      .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01, .lr_schedule = LR_CONSTANT,
      .steps = 1, .seed = 0, .eval_every = 0, .eval_batches = 8,
  };
}

void sema_train(Sema *S, Node *train) {
  train_defaults(&S->g->train);
  if (!train) return;
  Scope *sc = main_scope(S);
  StrMap seen = {0};
  for (int i = 0; i < train->list.n; i++) {
    Node *kv = train->list.items[i];
    if (kv->kind != N_TRAINKV) continue;
    size_t k = 0, n = sizeof train_keys / sizeof train_keys[0];
    while (k < n && strcmp(train_keys[k].name, kv->name)) k++;
    if (k == n) {
#define X(k) " " #k
      sema_err(S, kv->loc, "unknown train key '%s' (keys:" TRAIN_KEYS(X) ")", kv->name);
#undef X
      continue;
    }
    Loc *prev = strmap_get(&seen, kv->name);
    if (prev) {
      sema_err(S, kv->loc, "train key '%s' is given twice", kv->name);
      sema_note(S, *prev, "first given here");
      continue;
    }
    Loc *l = arena_alloc(S->a, sizeof *l);
    *l = kv->loc;
    strmap_put(S->a, &seen, kv->name, l);
    if (kv->a) train_keys[k].fn(S, sc, kv->a);
  }
  Loc *val = strmap_get(&seen, "val"), *sched = strmap_get(&seen, "lr_schedule");
  const TrainConfig *t = &S->g->train;
  if (sched && t->lr_schedule == LR_COSINE && t->min_lr > t->lr && (t->lr == 0 || (float)t->lr > 0)) /* after the loop: the keys come in any order */
    sema_err(S, *sched, "cosine's min_lr %g is above the optimizer's lr %g: the decay would raise the learning rate "
             "(min_lr <= lr)", t->min_lr, t->lr);
  /* (pass 71: silent; with steps given: a run of the default length is lengthened by --steps) */
  if (sched && strmap_get(&seen, "steps") && t->lr_schedule == LR_COSINE && t->warmup >= t->steps && t->steps > 0 &&
      S->d->nerrors == 0)
    diag_warning(S->d, *sched, "cosine's warm-up (%lld steps) is not shorter than the run (%lld step%s): the learning "
                 "rate %s (mplrun --steps may lengthen the run)", (long long)t->warmup, (long long)t->steps,
                 t->steps == 1 ? "" : "s", t->warmup > t->steps ? "never reaches lr" : "reaches lr at the last step only");
  if (val && t->val_path && t->data_kind != DATA_TOKENS) S->val_loc = *val; /* (check_token_inputs) */
}

/* --schedule: "1f1b", "interleaved(2)" (or "interleaved:2"). */
static void override_schedule(Sema *S, const char *s) {
  const char *p = strpbrk(s, "(:");
  if (!p) {
    if (!set_schedule(S, s, 0, false)) sema_err(S, (Loc){0}, "--schedule %s: expected sequential, gpipe, 1f1b, interleaved(v), zb or zbv", s);
    return;
  }
  char name[32];
  size_t n = (size_t)(p - s);
  char *end;
  long v = strtol(p + 1, &end, 10);
  bool ok = n < sizeof name && p[1] >= '0' && p[1] <= '9' && v >= 1 && /* digits: no sign, no space */
            (*p == ':' ? !*end : (end[0] == ')' && !end[1]));
  if (ok && v > 64) { /* as the train key says it */
    sema_err(S, (Loc){0}, "--schedule %s: at most 64 chunks per rank", s);
    return;
  }
  if (ok) {
    memcpy(name, s, n);
    name[n] = 0;
    ok = set_schedule(S, name, v, true);
  }
  if (!ok) sema_err(S, (Loc){0}, "--schedule %s: expected sequential, gpipe, 1f1b, interleaved(v), zb or zbv", s);
}

const char *sema_chunks_text(Sema *S) {
  const TrainConfig *t = &S->g->train;
  if (t->schedule == SCHED_ZBV) return "zbv";
  return arena_printf(S->a, "interleaved(%d)", t->virtual_stages);
}

/* What sets the stage count, and where, for the errors about stages (Graph.stages_from):
 * "pp = 2 with interleaved(2) from --schedule" at the mesh's pp. */
static void stages_origin(Sema *S) {
  Graph *g = S->g;
  bool pp_cli = S->opt->mesh_set && S->opt->mesh.pp > 0, v_cli = S->opt->schedule != NULL;
  int v = g->train.virtual_stages;
  const char *pp = arena_printf(S->a, pp_cli ? "--mesh pp=%d on the command line" : "pp = %d", g->mesh.pp);
  g->stages_from = v > 1 ? arena_printf(S->a, "%s with %s%s", pp, sema_chunks_text(S), v_cli ? " from --schedule" : "") : pp;
  if (!pp_cli && S->mesh_pp_loc.line) g->stages_loc = S->mesh_pp_loc;
  else if (v > 1 && !v_cli) g->stages_loc = S->sched_loc;
}

void sema_train_overrides(Sema *S, Loc loc) {
  TrainConfig *t = &S->g->train;
  Graph *g = S->g;
  if (S->opt->schedule) override_schedule(S, S->opt->schedule);
  if (S->opt->precision && prec_of(S->opt->precision) < 0) sema_err(S, (Loc){0}, "--precision %s: expected f32, tf32 or bf16", S->opt->precision);
  else if (S->opt->precision) t->precision = (PrecKind)prec_of(S->opt->precision);
  if (S->opt->microbatches > 0) t->microbatches = S->opt->microbatches; /* at most MPL_MAX_MICROBATCHES (main.c) */
  else if (S->opt->microbatches < 0) sema_err(S, (Loc){0}, "--microbatches must be at least 1");
  int64_t per = t->microbatches * g->mesh.dp;
  if (t->batch % per) {
    /* which flags set the factors (pass 71: --mesh dp=3 was not named) */
    const char *mb = S->opt->microbatches > 0 ? "--microbatches gives microbatches" : NULL;
    const char *dp = S->opt->mesh_set && S->opt->mesh.dp > 0 ? "--mesh gives dp" : NULL;
    const char *from = mb && dp ? arena_printf(S->a, " (%s, %s)", mb, dp)
                       : mb || dp ? arena_printf(S->a, " (%s)", mb ? mb : dp) : "";
    sema_err(S, S->batch_loc.line ? S->batch_loc : loc, "batch %lld is not divisible by microbatches * dp = %lld * %d%s",
             (long long)t->batch, (long long)t->microbatches, g->mesh.dp, from);
  }
  /* B is a micro-batch's rows; after the error above, the whole batch (the later messages'
     shapes then show the batch the program gives, not a rounded-down part: pass 103) */
  int64_t b = t->batch % per ? t->batch : t->batch / per;
  S->B = b > 0 ? b : 1;
  S->T = t->seq;
  g->nstages = g->mesh.pp * t->virtual_stages;
  stages_origin(S);
}
