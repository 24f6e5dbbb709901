/*
 * profile.c — profiles in the compiler: the identity of each forward op (prof_identify;
 * the job carries them, so that mplrun --profile can say which op each measured time
 * belongs to), and a profile read back and matched to the graph (prof_load: mplc
 * --profile) into the measured costs cost.c uses for the balancer and the plan.
 *
 * An op's identity (its key) is "HASH#K":
 *  - HASH, 64 bits (FNV-1a) of the op's kind, element type, shape and attributes, and of
 *    the hashes of its inputs, to a depth of four: the graph around it. Leaves are hashed
 *    by what names them: a param by its global name ("fc.3.weight"), a model input by its
 *    name; a constant by its value. Locations and stages are not part of it.
 *  - K: the op's rank among the ops with the same HASH, in graph order (the twelve
 *    iterations of a loop that computes the same thing from the same kind of input).
 * So an identity survives what changes no op's work: edited or moved lines, another pp,
 * schedule, stage split or --device-speed; and it changes with what does: a shape (the
 * batch, the micro-batch count, a width), an op's kind or attributes, a param's name, or
 * any of these within four ops upstream. A profile of a changed graph matches the ops
 * that did not change; the others are modelled.
 *
 * The measured costs (Measured, mplc.h): seconds per micro-batch on a device of speed 1:
 * what the profile's rank measured times the speed that rank was compiled for. Ops the
 * profile does not have keep the model's time, scaled by the ratio of the matched ops'
 * measured to modelled time (over the matched ops of the same kind when there are some:
 * a tanh costs tens of a model's FLOPs, a matmul about one), so that both add up.
 *
 * Invariants: identities depend only on the forward graph, in op order; prof_load never
 * changes the graph's ops, only g->measured.
 */
#include "mplc.h"
#include "../runtime/mpl.h"

#include <stdlib.h>
#include <string.h>

enum { ID_DEPTH = 4, UNMATCHED_SHOWN = 4 };

/* ---- identities ------------------------------------------------------------------- */

static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
#define MIX(h, v) ((h) = mix((h), &(v), sizeof(v)))

/* Does op do work a profile can measure? Forward ops that are not leaves or constants. */
static bool keyed(const Op *op) {
  OpClass c = op_info[op->kind].cls;
  return op->phase == PH_FWD && c != OPC_L && c != OPC_C && op->kind != OP_SEND && op->kind != OP_RECV;
}

/* The op alone: kind, type, shape, attributes; a leaf's name; a constant's value. */
static uint64_t local_hash(const Op *op) {
  uint64_t h = 14695981039346656037ull;
  int kind = op->kind, dtype = op->dtype, flags = op->keepdims | op->ta << 1 | op->tb << 2;
  MIX(h, kind), MIX(h, dtype), MIX(h, op->shape.rank);
  for (int i = 0; i < op->shape.rank; i++) MIX(h, op->shape.d[i]);
  MIX(h, op->axis), MIX(h, op->axis2), MIX(h, flags), MIX(h, op->begin), MIX(h, op->end), MIX(h, op->value);
  if ((op->kind == OP_PARAM || op->kind == OP_INPUT) && op->name) h = mix(h, op->name, strlen(op->name));
  return h;
}

/* "matmul in nn.linear at model.mpl:13:16" or "tanh at model.mpl:17:22". */
static const char *op_label(Arena *a, const Op *op) {
  Loc l = op_user_loc(op);
  const char *file = l.file ? strrchr(l.file, '/') : NULL;
  file = file ? file + 1 : l.file ? l.file : "?";
  const char *in = op->site && op->site->inside ? op->site->inside : NULL;
  char inside[160] = "";
  if (in) snprintf(inside, sizeof inside, " in %.*s", (int)strcspn(in, " "), in);
  return arena_printf(a, "%s%s at %s:%d:%d", op_name(op->kind), inside, file, l.line, l.col);
}

/* Occurrence numbers: the k-th op with hash h gets k (a small open-addressed table). */
typedef struct Seen {
  uint64_t *h;
  int *n;
  size_t cap;
} Seen;

static int seen_next(Seen *s, uint64_t h) {
  size_t i = (size_t)(h ^ h >> 29) & (s->cap - 1);
  while (s->n[i] && s->h[i] != h) i = (i + 1) & (s->cap - 1);
  s->h[i] = h;
  return s->n[i]++;
}

void prof_identify(Graph *g) {
  int n = g->nops;
  uint64_t *cur = calloc((size_t)n + 1, sizeof *cur), *next = calloc((size_t)n + 1, sizeof *next);
  Seen seen = {NULL, NULL, 16};
  while (seen.cap < 2 * (size_t)n) seen.cap *= 2;
  seen.h = calloc(seen.cap, sizeof *seen.h), seen.n = calloc(seen.cap, sizeof *seen.n);
  if (!cur || !next || !seen.h || !seen.n) die("out of memory");
  for (int i = 0; i < n; i++) cur[i] = local_hash(g->ops[i]);
  for (int d = 0; d < ID_DEPTH; d++) {
    for (int i = 0; i < n; i++) {
      uint64_t h = local_hash(g->ops[i]);
      for (int j = 0; j < g->ops[i]->nin; j++) MIX(h, cur[g->ops[i]->in[j]]);
      next[i] = h;
    }
    uint64_t *t = cur;
    cur = next, next = t;
  }
  g->op_key = arena_alloc(g->arena, sizeof(char *) * (size_t)(n + 1));
  g->op_label = arena_alloc(g->arena, sizeof(char *) * (size_t)(n + 1));
  g->nop_keys = n;
  for (int i = 0; i < n; i++) {
    if (!keyed(g->ops[i])) continue;
    g->op_key[i] = arena_printf(g->arena, "%016llx#%d", (unsigned long long)cur[i], seen_next(&seen, cur[i]));
    g->op_label[i] = op_label(g->arena, g->ops[i]);
  }
  free(cur), free(next), free(seen.h), free(seen.n);
}

/* ---- a profile matched to the graph ----------------------------------------------- */

typedef struct KeyIdx {
  const char *key;
  int i;
} KeyIdx;

static int cmp_key(const void *a, const void *b) { return strcmp(((const KeyIdx *)a)->key, ((const KeyIdx *)b)->key); }

/* "model balance, pp=2, 1f1b, 8 micro-batches, 5 steps; rank 0: cpu, 1 thread, GEMM 48.2
 * GFLOP/s; ...": the run the profile measured. */
static const char *summary(Arena *a, const MplProfile *p) {
  const char *s = arena_printf(a, "model %s, pp=%d, %s, %d micro-batches, %d step%s", p->model, p->pp, p->schedule,
                               p->microbatches, p->steps, p->steps == 1 ? "" : "s");
  for (int r = 0; r < p->nranks; r++) {
    const MplProfileRank *k = &p->ranks[r];
    s = arena_printf(a, "%s; rank %d: %s", s, r, k->device);
    if (!strcmp(k->device, "cpu")) s = arena_printf(a, "%s, %d thread%s", s, k->threads, k->threads == 1 ? "" : "s");
    if (k->speed != 1) s = arena_printf(a, "%s, speed %g", s, k->speed);
    if (k->gemm_gflops > 0) s = arena_printf(a, "%s, GEMM %.1f GFLOP/s", s, k->gemm_gflops);
  }
  return s;
}

static Measured *measured_new(Arena *a, const Graph *g, const char *path) {
  Measured *m = arena_alloc(a, sizeof *m);
  size_t n = (size_t)g->nop_keys + 1;
  m->path = path;
  m->nops = g->nop_keys;
  m->fwd = arena_alloc(a, sizeof(double) * n), m->bwd_b = arena_alloc(a, sizeof(double) * n);
  m->bwd_w = arena_alloc(a, sizeof(double) * n);
  m->unmatched = arena_alloc(a, sizeof(char *) * UNMATCHED_SHOWN);
  for (int i = 0; i < m->nops; i++) m->fwd[i] = m->bwd_b[i] = m->bwd_w[i] = -1;
  return m;
}

/* Fills m from p's ops that g has; returns how many of p's ops g does not have. */
static int match_ops(const Graph *g, const MplProfile *p, Measured *m) {
  KeyIdx *idx = calloc((size_t)p->nops + 1, sizeof *idx);
  bool *used = calloc((size_t)p->nops + 1, 1);
  if (!idx || !used) die("out of memory");
  for (int i = 0; i < p->nops; i++) idx[i] = (KeyIdx){p->ops[i].key, i};
  qsort(idx, (size_t)p->nops, sizeof *idx, cmp_key);
  double meas = 0, model = 0, kmeas[OP__COUNT] = {0}, kmodel[OP__COUNT] = {0};
  for (int id = 0; id < g->nop_keys; id++) {
    if (!g->op_key[id]) continue;
    m->nkeyed++;
    KeyIdx want = {g->op_key[id], 0}, *hit = bsearch(&want, idx, (size_t)p->nops, sizeof *idx, cmp_key);
    if (!hit) {
      if (m->nunmatched_shown < UNMATCHED_SHOWN) m->unmatched[m->nunmatched_shown++] = g->op_label[id];
      continue;
    }
    const MplProfileOp *o = &p->ops[hit->i];
    double speed = p->ranks[o->rank].speed; /* back to a device of speed 1 */
    m->fwd[id] = o->fwd_s * speed, m->bwd_b[id] = o->bwd_b_s * speed, m->bwd_w[id] = o->bwd_w_s * speed;
    m->nmatched++;
    used[hit->i] = true;
    double t = m->fwd[id] + m->bwd_b[id] + m->bwd_w[id], mt = 3 * cost_time(cost_op(g, g->ops[id]));
    meas += t, model += mt;
    kmeas[g->ops[id]->kind] += t, kmodel[g->ops[id]->kind] += mt;
  }
  m->one_pass = true;
  for (int id = 0; id < m->nops && m->one_pass; id++) m->one_pass = !(m->bwd_w[id] > 0);
  double elems = 0, setup = 0, update = 0;
  for (int r = 0; r < p->nranks && elems >= 0; r++) {
    const MplProfileRank *k = &p->ranks[r];
    double rest = k->wall_s - k->compute_s - k->msg_s - k->update_s;
    elems = k->update_elems >= 0 ? elems + k->update_elems : -1;
    setup += (rest > 0 ? rest : 0) * k->speed, update += k->update_s * k->speed;
  }
  m->setup_s = elems > 0 ? setup / elems : -1, m->update_s = elems > 0 ? update / elems : -1;
  m->scale = meas > 0 && model > 0 ? meas / model : 1;
  for (int k = 0; k < OP__COUNT; k++) m->kind_scale[k] = kmeas[k] > 0 && kmodel[k] > 0 ? kmeas[k] / kmodel[k] : 0;
  int extra = 0;
  for (int i = 0; i < p->nops; i++) extra += !used[i];
  free(idx), free(used);
  return extra;
}

/* The profile matches only part of the graph: say which ops are modelled. */
static void warn_partial(Diag *d, const Graph *g, const Measured *m, int extra) {
  fprintf(d->out, "mplc: warning: --profile %s matches %d of the %d ops of model %s", m->path, m->nmatched, m->nkeyed,
          g->model_name);
  if (m->nmatched < m->nkeyed) { /* (all matched: only the profile's extra ops are news) */
    fprintf(d->out, "; the other %d (changed or new) are modelled:", m->nkeyed - m->nmatched);
    for (int i = 0; i < m->nunmatched_shown; i++) fprintf(d->out, "%s %s", i ? "," : "", m->unmatched[i]);
    if (m->nkeyed - m->nmatched > m->nunmatched_shown)
      fprintf(d->out, " and %d more", m->nkeyed - m->nmatched - m->nunmatched_shown);
  }
  if (extra) fprintf(d->out, "; %d op%s of the profile %s no longer in the graph", extra, extra == 1 ? "" : "s",
                     extra == 1 ? "is" : "are");
  fprintf(d->out, "\n");
}

int prof_load(Diag *d, Graph *g, const char *path) {
  MplProfile p;
  MplErr err = {{0}};
  if (mpl_profile_read(path, &p, &err) != MPL_OK) {
    diag_error_noloc(d, "--profile %s", err.msg);
    return 1;
  }
  int rc = 0;
  const char *prec = mpl_prec_name(g->train.precision);
  if (strcmp(p.model, g->model_name ? g->model_name : "")) {
    diag_error_noloc(d, "--profile %s is a profile of model '%s' (from %s), not of model '%s': refused", path, p.model,
                     p.source, g->model_name);
    rc = 1;
  } else if (p.precision && p.precision[0] && strcmp(p.precision, prec)) { /* (its products' times are another precision's) */
    diag_error_noloc(d, "--profile %s measured a job of precision %s, and this one is %s: refused (profile the job "
                     "compiled with precision %s)", path, p.precision, prec, prec);
    rc = 1;
  } else {
    Measured *m = measured_new(g->arena, g, path);
    int extra = match_ops(g, &p, m);
    m->summary = summary(g->arena, &p);
    double total = 0; /* the matched ops' measured time */
    for (int id = 0; id < m->nops; id++)
      if (m->fwd[id] >= 0) total += m->fwd[id] + m->bwd_b[id] + m->bwd_w[id];
    if (m->nmatched == 0) {
      diag_error_noloc(d, "--profile %s matches none of the %d ops of model %s: it measured another graph (a shape, "
                       "the micro-batch size or tp differ?): refused", path, m->nkeyed, g->model_name);
      rc = 1;
    } else if (!(total > 0)) { /* (every cost would be 0, the unmatched ops' modelled ones unscaled) */
      diag_error_noloc(d, "--profile %s measured no time for any of its %d ops: refused (profile a run of at least one "
                       "step)", path, m->nmatched);
      rc = 1;
    } else {
      if (m->nmatched < m->nkeyed || extra) warn_partial(d, g, m, extra);
      g->measured = m;
    }
  }
  mpl_profile_free(&p);
  return rc;
}
