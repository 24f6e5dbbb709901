/*
 * trace.c — observability: the Chrome trace writer (--trace, for chrome://tracing and
 * Perfetto) and the JSON-lines metrics writer.
 *
 * Invariants: a rank records only into its own MplTraceRank (one rank = one thread), so
 * recording takes no lock; the file is written once, after the ranks stopped, as one JSON
 * array: a thread_name metadata event "rank N" per rank (with its mesh coordinates,
 * "rank N (dp D, pp P, tp T)", when dp * tp > 1), then complete events ("ph": "X")
 * with tid = rank, timestamps in microseconds since mpl_trace_init on CLOCK_MONOTONIC.
 * Names are escaped, so the output is always valid JSON. A metrics line is one JSON object
 * flushed as soon as it is written, so a crash loses at most the line being written.
 */
#include "job.h" /* mpl_mesh_coords */
#include "mpl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int mpl_trace_init(MplTrace *t, int nranks, MplErr *err) {
  memset(t, 0, sizeof *t);
  if (nranks < 1) return mpl_errf(err, "trace: bad rank count %d", nranks);
  t->ranks = mpl_calloc((size_t)nranks, sizeof *t->ranks);
  if (!t->ranks) return mpl_errf(err, "trace: out of memory");
  t->nranks = nranks;
  t->t0_ns = now_ns();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  t->real0_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  return MPL_OK;
}

void mpl_trace_free(MplTrace *t) {
  for (int r = 0; r < t->nranks; r++) mpl_free(t->ranks[r].ev);
  mpl_free(t->ranks);
  memset(t, 0, sizeof *t);
}

void mpl_trace_set_mesh(MplTrace *t, int tp, int pp) {
  t->tp = tp;
  t->pp = pp;
}

double mpl_trace_now(const MplTrace *t) { return (double)(now_ns() - t->t0_ns) / 1000.0; }

void mpl_trace_event(MplTrace *t, int rank, const char *name, const char *cat, double ts, double dur) {
  if (!t || rank < 0 || rank >= t->nranks) return;
  MplTraceRank *r = &t->ranks[rank];
  if (r->n == r->cap) {
    int64_t nc = r->cap ? r->cap * 2 : 1024;
    MplTraceEvent *ev = mpl_realloc(r->ev, (size_t)nc * sizeof *ev);
    if (!ev) { r->oom = true; return; }
    r->ev = ev, r->cap = nc;
  }
  MplTraceEvent *e = &r->ev[r->n++];
  snprintf(e->name, sizeof e->name, "%s", name ? name : "");
  snprintf(e->cat, sizeof e->cat, "%s", cat ? cat : "");
  e->ts = ts;
  e->dur = dur;
}

/* A JSON string literal. */
static void put_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void put_event(FILE *f, int rank, const MplTraceEvent *e) {
  fprintf(f, ",\n{\"name\":");
  put_json_str(f, e->name);
  fprintf(f, ",\"cat\":");
  put_json_str(f, e->cat);
  fprintf(f, ",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":0,\"tid\":%d}", isfinite(e->ts) ? e->ts : 0.0,
          isfinite(e->dur) ? e->dur : 0.0, rank);
}

/* Written whole or not at all (mpl_afile: a failed write, a full disk, leaves an earlier
 * file as it was), and never with events missing. */
int mpl_trace_write(const MplTrace *t, const char *path, MplErr *err) {
  for (int r = 0; r < t->nranks; r++)
    if (t->ranks[r].oom)
      return mpl_errf(err, "%s: the trace is not written: out of memory recording rank %d's events after %lld of "
                      "them", path, r, (long long)t->ranks[r].n);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return mpl_errf(err, "%s: out of memory for the trace", path);
  fprintf(f, "[{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"mplrun\"}}");
  bool mesh = t->tp > 0 && t->pp > 0 && t->nranks > t->pp;
  for (int r = 0; r < t->nranks; r++) {
    fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,\"args\":{\"name\":\"rank %d", r, r);
    int dpi, tpi, pr;
    mpl_mesh_coords((MplMesh){t->nranks / (t->pp * t->tp), t->pp, t->tp}, r, &dpi, &tpi, &pr);
    if (mesh) fprintf(f, " (dp %d, pp %d, tp %d)", dpi, pr, tpi);
    fprintf(f, "\"}}");
  }
  for (int r = 0; r < t->nranks; r++)
    for (int64_t i = 0; i < t->ranks[r].n; i++) put_event(f, r, &t->ranks[r].ev[i]);
  fprintf(f, "\n]\n");
  bool bad = ferror(f) != 0;
  fclose(f);
  MplAtomicFile af;
  int st = bad ? mpl_errf(err, "%s: out of memory for the trace", path) : mpl_afile_open(&af, path, err);
  if (st == MPL_OK && (st = mpl_afile_write(&af, text, len, err)) != MPL_OK) mpl_afile_abort(&af);
  else if (st == MPL_OK) st = mpl_afile_commit(&af, err);
  free(text); /* open_memstream's buffer is the C library's */
  return st;
}

/* ---- metrics ------------------------------------------------------------------ */

/* The lines of an earlier run's file (a resumed run's) whose "step" is at most keep, in
 * order: the steps before the checkpoint; a line of a later step (written after the
 * checkpoint by the run that stopped) or with no step is dropped. NULL: none, or unreadable. */
static char *kept_lines(const char *path, int64_t keep) {
  uint8_t *text;
  size_t len;
  if (keep <= 0 || mpl_file_read_all(path, &text, &len, NULL) != MPL_OK) return NULL; /* (a regular file only) */
  char *out = mpl_malloc(len + 1), *o = out;
  for (char *line = (char *)text, *next; out && line < (char *)text + len; line = next) {
    char *nl = memchr(line, '\n', (size_t)((char *)text + len - line));
    next = nl ? nl + 1 : (char *)text + len;
    long long step;
    if (nl && sscanf(line, "{\"step\": %lld,", &step) == 1 && step >= 1 && step <= keep) {
      memcpy(o, line, (size_t)(next - line));
      o += next - line;
    }
  }
  if (out) *o = 0;
  mpl_free(text);
  return out;
}

int mpl_metrics_open(MplMetrics *m, const char *path, int64_t keep, MplErr *err) {
  memset(m, 0, sizeof *m);
  m->path = mpl_strdup(path);
  if (!m->path) return mpl_errf(err, "%s: out of memory", path);
  char *old = kept_lines(path, keep);
  m->f = fopen(path, "w");
  if (!m->f) {
    mpl_errf(err, "%s: cannot write metrics: %s", path, strerror(errno));
    mpl_free(old);
    mpl_metrics_close(m);
    return MPL_ERR;
  }
  if (old) fputs(old, m->f);
  mpl_free(old);
  return MPL_OK;
}

static void put_number(FILE *f, double v) {
  if (!isfinite(v)) fputs("null", f);
  else if (v == floor(v) && fabs(v) < 9007199254740992.0) fprintf(f, "%.0f", v);
  else fprintf(f, "%.9g", v);
}

int mpl_metrics_line(MplMetrics *m, const char *const *keys, const double *vals, int n, MplErr *err) {
  fputc('{', m->f);
  for (int i = 0; i < n; i++) {
    if (i) fputs(", ", m->f);
    put_json_str(m->f, keys[i]);
    fputs(": ", m->f);
    put_number(m->f, vals[i]);
  }
  fputs("}\n", m->f);
  if (fflush(m->f) != 0 || ferror(m->f)) return mpl_errf(err, "%s: write error: %s", m->path, strerror(errno));
  return MPL_OK;
}

void mpl_metrics_close(MplMetrics *m) {
  if (m->f) fclose(m->f);
  mpl_free(m->path);
  memset(m, 0, sizeof *m);
}
