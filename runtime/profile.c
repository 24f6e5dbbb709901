/*
 * profile.c — the profile file, the contract between mplrun --profile (which writes what
 * it measured) and mplc --profile (which balances and plans with it): JSON, one object.
 *
 *   {"format": "mpl-profile 1", "model": "balance", "source": "m.mpl",
 *    "mesh": {"dp": 1, "pp": 2, "tp": 1}, "schedule": "1f1b", "microbatches": 8, "steps": 5,
 *    "ranks": [{"rank": 0, "device": "cpu", "threads": 1, "speed": 1, "gemm_gflops": 41.5,
 *               "busy_s": ..., "wall_s": ..., "compute_s": ..., "msg_s": ..., "update_s": ...,
 *               "update_elems": 395264}],
 *    "ops": [{"key": "9c3e...#0", "label": "matmul in nn.linear at m.mpl:13:16", "rank": 0,
 *             "fwd_s": ..., "bwd_b_s": ..., "bwd_w_s": ...}]}
 *
 * Invariants: the writer escapes every string and writes every time with 17 significant
 * digits (a profile read back is the profile written); the reader trusts nothing: the
 * format, every count, every rank index and every time (finite, >= 0) is checked, and on
 * an error nothing is returned but the message.
 */
#include "mpl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- writing ---------------------------------------------------------------------- */

static void put_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void put_rank(FILE *f, int r, const MplProfileRank *k) {
  fprintf(f, "    {\"rank\": %d, \"device\": ", r);
  put_str(f, k->device);
  fprintf(f, ", \"threads\": %d, \"speed\": %.17g, \"gemm_gflops\": %.17g,\n     \"busy_s\": %.17g, \"wall_s\": "
          "%.17g, \"compute_s\": %.17g, \"msg_s\": %.17g, \"update_s\": %.17g,\n     \"update_elems\": %.17g}",
          k->threads, k->speed, k->gemm_gflops, k->busy_s, k->wall_s, k->compute_s, k->msg_s, k->update_s,
          k->update_elems);
}

static void put_op(FILE *f, const MplProfileOp *o) {
  fprintf(f, "    {\"key\": ");
  put_str(f, o->key);
  fprintf(f, ", \"label\": ");
  put_str(f, o->label);
  fprintf(f, ", \"rank\": %d, \"fwd_s\": %.17g, \"bwd_b_s\": %.17g, \"bwd_w_s\": %.17g}", o->rank, o->fwd_s,
          o->bwd_b_s, o->bwd_w_s);
}

static void put_profile(FILE *f, const MplProfile *p) {
  fprintf(f, "{\n  \"format\": ");
  put_str(f, MPL_PROFILE_FORMAT);
  fprintf(f, ",\n  \"model\": ");
  put_str(f, p->model);
  fprintf(f, ",\n  \"source\": ");
  put_str(f, p->source);
  fprintf(f, ",\n  \"mesh\": {\"dp\": %d, \"pp\": %d, \"tp\": %d},\n  \"schedule\": ", p->dp, p->pp, p->tp);
  put_str(f, p->schedule);
  fprintf(f, ",\n  \"precision\": ");
  put_str(f, p->precision ? p->precision : "");
  fprintf(f, ",\n  \"microbatches\": %d,\n  \"steps\": %d,\n  \"ranks\": [\n", p->microbatches, p->steps);
  for (int r = 0; r < p->nranks; r++) {
    put_rank(f, r, &p->ranks[r]);
    fprintf(f, "%s\n", r + 1 < p->nranks ? "," : "");
  }
  fprintf(f, "  ],\n  \"ops\": [\n");
  for (int i = 0; i < p->nops; i++) {
    put_op(f, &p->ops[i]);
    fprintf(f, "%s\n", i + 1 < p->nops ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
}

int mpl_profile_write(const MplProfile *p, const char *path, MplErr *err) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return mpl_errf(err, "%s: out of memory", path);
  put_profile(f, p);
  fclose(f);
  MplAtomicFile af;
  int st = mpl_afile_open(&af, path, err);
  if (st == MPL_OK && (st = mpl_afile_write(&af, text, len, err)) != MPL_OK) mpl_afile_abort(&af);
  else if (st == MPL_OK) st = mpl_afile_commit(&af, err);
  free(text); /* open_memstream's buffer is the C library's */
  return st;
}

/* ---- reading ---------------------------------------------------------------------- */

typedef struct Reader {
  const char *path;
  MplErr *err;
  bool failed;
} Reader;

static const MplJson *need(Reader *rd, const MplJson *obj, const char *key, MplJsonType type, const char *where) {
  const MplJson *v = obj && obj->type == MPL_JSON_OBJ ? mpl_json_get(obj, key) : NULL;
  if (v && v->type == type) return v;
  if (!rd->failed) mpl_errf(rd->err, "%s: not a profile of mplrun --profile: %s%s\"%s\" is missing or not a %s",
                            rd->path, where, *where ? ": " : "", key,
                            type == MPL_JSON_STR ? "string" : type == MPL_JSON_NUM ? "number" : "list");
  rd->failed = true;
  return NULL;
}

static char *get_str(Reader *rd, const MplJson *obj, const char *key, const char *where) {
  const MplJson *v = need(rd, obj, key, MPL_JSON_STR, where);
  char *s = mpl_strdup(v ? v->str : "");
  if (!s && !rd->failed) rd->failed = true, mpl_errf(rd->err, "%s: out of memory", rd->path);
  return s;
}

/* A count or index: an integer in [lo, hi]. */
static int get_int(Reader *rd, const MplJson *obj, const char *key, int lo, int hi, const char *where) {
  const MplJson *v = need(rd, obj, key, MPL_JSON_NUM, where);
  if (!v) return lo;
  if (v->is_int && v->i >= lo && v->i <= hi) return (int)v->i;
  if (!rd->failed) mpl_errf(rd->err, "%s: %s%s\"%s\" must be an integer from %d to %d", rd->path, where,
                            *where ? ": " : "", key, lo, hi);
  rd->failed = true;
  return lo;
}

/* A time, rate or count: a number in [0, max] (times at most MPL_PROFILE_MAX_S: a damaged
 * 1e308 made the plan's sums inf, and the errors then named no file). */
static double get_num_max(Reader *rd, const MplJson *obj, const char *key, const char *where, double max) {
  const MplJson *v = need(rd, obj, key, MPL_JSON_NUM, where);
  if (!v) return 0;
  if (isfinite(v->num) && v->num >= 0 && v->num <= max) return v->num;
  if (!rd->failed) mpl_errf(rd->err, "%s: %s: \"%s\" is %g, not a number from 0 to %g", rd->path, where, key, v->num, max);
  rd->failed = true;
  return 0;
}

static double get_num(Reader *rd, const MplJson *obj, const char *key, const char *where) {
  return get_num_max(rd, obj, key, where, MPL_PROFILE_MAX_S);
}

static void read_ranks(Reader *rd, const MplJson *arr, MplProfile *p) {
  if (arr->n != p->pp) {
    rd->failed = true;
    mpl_errf(rd->err, "%s: %d ranks listed for pp = %d", rd->path, arr->n, p->pp);
    return;
  }
  p->ranks = mpl_calloc((size_t)arr->n + 1, sizeof *p->ranks);
  if (!p->ranks) return (void)(rd->failed = true, mpl_errf(rd->err, "%s: out of memory", rd->path));
  p->nranks = arr->n;
  for (int r = 0; r < arr->n && !rd->failed; r++) {
    const MplJson *o = &arr->items[r];
    MplProfileRank *k = &p->ranks[r];
    char where[32];
    snprintf(where, sizeof where, "rank %d", r);
    if (get_int(rd, o, "rank", r, r, where) != r) break;
    k->device = get_str(rd, o, "device", where);
    k->threads = get_int(rd, o, "threads", 0, 1 << 20, where);
    k->speed = get_num(rd, o, "speed", where), k->gemm_gflops = get_num_max(rd, o, "gemm_gflops", where, 1e12);
    k->busy_s = get_num(rd, o, "busy_s", where), k->wall_s = get_num(rd, o, "wall_s", where);
    k->compute_s = get_num(rd, o, "compute_s", where), k->msg_s = get_num(rd, o, "msg_s", where);
    k->update_s = get_num(rd, o, "update_s", where);
    k->update_elems = mpl_json_get(o, "update_elems") ? get_num_max(rd, o, "update_elems", where, 1e18) : -1;
    if (!rd->failed && k->update_elems >= 0 && k->update_elems != floor(k->update_elems))
      rd->failed = true, mpl_errf(rd->err, "%s: rank %d: update_elems %g is not a count", rd->path, r, k->update_elems);
    if (!rd->failed && !(k->speed >= 1e-6 && k->speed <= 1e6))
      rd->failed = true, mpl_errf(rd->err, "%s: rank %d: speed %g is not from 1e-6 to 1e6 (as --device-speed)", rd->path,
                                  r, k->speed);
  }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static void read_ops(Reader *rd, const MplJson *arr, MplProfile *p) {
  p->ops = mpl_calloc((size_t)arr->n + 1, sizeof *p->ops);
  if (!p->ops) return (void)(rd->failed = true, mpl_errf(rd->err, "%s: out of memory", rd->path));
  p->nops = arr->n;
  for (int i = 0; i < arr->n && !rd->failed; i++) {
    const MplJson *o = &arr->items[i];
    MplProfileOp *op = &p->ops[i];
    char where[32];
    snprintf(where, sizeof where, "op %d", i);
    op->key = get_str(rd, o, "key", where), op->label = get_str(rd, o, "label", where);
    op->rank = get_int(rd, o, "rank", 0, p->pp - 1, where);
    op->fwd_s = get_num(rd, o, "fwd_s", where), op->bwd_b_s = get_num(rd, o, "bwd_b_s", where);
    op->bwd_w_s = get_num(rd, o, "bwd_w_s", where);
  }
  /* each op once (the writer lists each once; a key twice made which one counts depend on
     the sort) */
  const char **keys = rd->failed ? NULL : mpl_malloc(sizeof *keys * ((size_t)p->nops + 1));
  if (!rd->failed && !keys) return (void)(rd->failed = true, mpl_errf(rd->err, "%s: out of memory", rd->path));
  for (int i = 0; keys && i < p->nops; i++) keys[i] = p->ops[i].key;
  if (keys) qsort(keys, (size_t)p->nops, sizeof *keys, cmp_str);
  for (int i = 1; keys && i < p->nops && !rd->failed; i++)
    if (!strcmp(keys[i - 1], keys[i]))
      rd->failed = true, mpl_errf(rd->err, "%s: op \"%s\" is listed twice (not a profile mplrun wrote)", rd->path, keys[i]);
  mpl_free(keys);
}

static void read_profile(Reader *rd, const MplJson *root, MplProfile *p) {
  const MplJson *fmt = need(rd, root, "format", MPL_JSON_STR, "");
  if (fmt && strcmp(fmt->str, MPL_PROFILE_FORMAT)) {
    rd->failed = true;
    mpl_errf(rd->err, "%s: profile format \"%s\", but this program reads \"%s\" (profile the job again)", rd->path,
             fmt->str, MPL_PROFILE_FORMAT);
  }
  if (rd->failed) return;
  p->model = get_str(rd, root, "model", ""), p->source = get_str(rd, root, "source", "");
  p->schedule = get_str(rd, root, "schedule", "");
  p->precision = mpl_json_get(root, "precision") ? get_str(rd, root, "precision", "") : mpl_strdup("");
  const MplJson *mesh = need(rd, root, "mesh", MPL_JSON_OBJ, "");
  p->dp = get_int(rd, mesh, "dp", 1, 65536, "mesh"), p->pp = get_int(rd, mesh, "pp", 1, 4096, "mesh");
  p->tp = get_int(rd, mesh, "tp", 1, 65536, "mesh");
  p->microbatches = get_int(rd, root, "microbatches", 1, 1 << 30, "");
  p->steps = get_int(rd, root, "steps", 0, 1 << 30, "");
  const MplJson *ranks = need(rd, root, "ranks", MPL_JSON_ARR, ""), *ops = need(rd, root, "ops", MPL_JSON_ARR, "");
  if (!rd->failed) read_ranks(rd, ranks, p);
  if (!rd->failed) read_ops(rd, ops, p);
}

int mpl_profile_read(const char *path, MplProfile *p, MplErr *err) {
  memset(p, 0, sizeof *p);
  uint8_t *text = NULL;
  size_t len = 0;
  if (mpl_file_read_all(path, &text, &len, err) != MPL_OK) return MPL_ERR;
  MplJson root;
  MplErr jerr = {{0}};
  if (mpl_json_parse((const char *)text, len, &root, &jerr) != MPL_OK) {
    mpl_free(text);
    return mpl_errf(err, "%s: not a profile of mplrun --profile: %s", path, jerr.msg);
  }
  mpl_free(text);
  Reader rd = {path, err, false};
  if (root.type != MPL_JSON_OBJ) rd.failed = true, mpl_errf(err, "%s: not a profile of mplrun --profile", path);
  else read_profile(&rd, &root, p);
  mpl_json_free(&root);
  if (rd.failed) {
    mpl_profile_free(p);
    return MPL_ERR;
  }
  return MPL_OK;
}

void mpl_profile_free(MplProfile *p) {
  if (!p) return;
  mpl_free(p->model), mpl_free(p->source), mpl_free(p->schedule), mpl_free(p->precision);
  for (int r = 0; p->ranks && r < p->nranks; r++) mpl_free(p->ranks[r].device);
  mpl_free(p->ranks);
  for (int i = 0; p->ops && i < p->nops; i++) mpl_free(p->ops[i].key), mpl_free(p->ops[i].label);
  mpl_free(p->ops);
  memset(p, 0, sizeof *p);
}
