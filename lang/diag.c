/*
 * diag.c — user-facing diagnostics: "file:line:col: error: msg", the source
 * line, and a caret under the column.
 *
 * Invariants:
 *  - Errors are counted, never fatal. After max_errors (0: no limit) further
 *    errors are counted but not printed, and one line says so.
 *  - A note belongs to the error before it and is dropped with it.
 *  - Columns are 1-based bytes; the caret line keeps the tabs of the source
 *    line and skips UTF-8 continuation bytes, so the caret lines up on screen.
 *  - A location in a file that was not registered prints only the first line.
 */
#include "ast.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void diag_init(Diag *d, Arena *a, FILE *out) {
  memset(d, 0, sizeof *d);
  d->arena = a;
  d->out = out ? out : stderr;
  d->max_errors = 50;
}

SourceFile *diag_add_file(Diag *d, const char *path, const char *text, size_t len) {
  SourceFile *f = arena_alloc(d->arena, sizeof *f);
  f->path = path;
  f->text = text;
  f->len = len;
  vec_push(d->arena, &d->files, f);
  return f;
}

/* A source file of at most MAX_SOURCE bytes (past it, errno EFBIG: /dev/zero or a huge file
 * read on until memory ran out and mplc aborted). */
enum { MAX_SOURCE = 256 << 20 };

SourceFile *diag_load_file(Diag *d, const char *path) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) die("out of memory reading %s", path);
    len += fread(buf + len, 1, cap - len, fp);
    if (len < cap) break;
    if (len >= MAX_SOURCE) {
      free(buf);
      fclose(fp);
      errno = EFBIG;
      return NULL;
    }
    cap *= 2;
    buf = realloc(buf, cap);
  }
  bool bad = ferror(fp);
  fclose(fp);
  if (bad) {
    free(buf);
    return NULL;
  }
  char *text = arena_strndup(d->arena, buf, len);
  free(buf);
  return diag_add_file(d, arena_strdup(d->arena, path), text, len);
}

/* The registered file for a location's path (the latest one, if registered twice). */
static const SourceFile *diag_find_file(const Diag *d, const char *path) {
  if (!path) return NULL;
  for (int i = d->files.n - 1; i >= 0; i--) {
    const SourceFile *f = d->files.items[i];
    if (f->path == path || strcmp(f->path, path) == 0) return f;
  }
  return NULL;
}

/* Prints line `line` of f (control bytes as spaces, tabs kept) and the caret under col. */
static void diag_print_source(const Diag *d, const SourceFile *f, int line, int col) {
  size_t i = 0;
  for (int l = 1; l < line && i < f->len; i++)
    if (f->text[i] == '\n') l++;
  size_t start = i, end = i;
  while (end < f->len && f->text[end] != '\n') end++;
  if (end > start && f->text[end - 1] == '\r') end--;
  for (size_t k = start; k < end; k++) {
    unsigned char c = (unsigned char)f->text[k];
    fputc(c == '\t' || c >= 0x20 ? c : ' ', d->out);
  }
  fputc('\n', d->out);
  for (size_t k = start; k < end && (int)(k - start) < col - 1; k++) {
    unsigned char c = (unsigned char)f->text[k];
    if (c == '\t') fputc('\t', d->out);
    else if ((c & 0xC0) != 0x80) fputc(' ', d->out);
  }
  for (int k = (int)(end - start); k < col - 1; k++) fputc(' ', d->out);
  fputs("^\n", d->out);
}

static void diag_vreport(Diag *d, Loc loc, const char *kind, const char *fmt, va_list ap) {
  if (loc.line <= 0) {
    fprintf(d->out, "%s: %s: ", loc.file ? loc.file : "mplc", kind);
  } else {
    fprintf(d->out, "%s:%d:%d: %s: ", loc.file ? loc.file : "<input>", loc.line, loc.col, kind);
  }
  vfprintf(d->out, fmt, ap);
  fputc('\n', d->out);
  const SourceFile *f = loc.line > 0 ? diag_find_file(d, loc.file) : NULL;
  if (f) diag_print_source(d, f, loc.line, loc.col);
  fflush(d->out);
}

/* Counts an error; false if it must not be printed (over the limit). */
static bool diag_count_error(Diag *d) {
  d->nerrors++;
  if (d->max_errors <= 0 || d->nerrors <= d->max_errors) {
    d->last_error_dropped = false;
    return true;
  }
  if (d->nerrors == d->max_errors + 1) {
    fprintf(d->out, "mplc: too many errors, stopping\n");
    fflush(d->out);
  }
  d->last_error_dropped = true;
  return false;
}

void diag_error(Diag *d, Loc loc, const char *fmt, ...) {
  if (!diag_count_error(d)) return;
  va_list ap;
  va_start(ap, fmt);
  diag_vreport(d, loc, "error", fmt, ap);
  va_end(ap);
}

void diag_error_nosource(Diag *d, Loc loc, const char *fmt, ...) {
  if (!diag_count_error(d)) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(d->out, "%s:%d:%d: error: ", loc.file ? loc.file : "<input>", loc.line, loc.col);
  vfprintf(d->out, fmt, ap);
  fputc('\n', d->out);
  fflush(d->out);
  va_end(ap);
}

void diag_warning(Diag *d, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_vreport(d, loc, "warning", fmt, ap);
  va_end(ap);
}

void diag_note(Diag *d, Loc loc, const char *fmt, ...) {
  if (d->last_error_dropped) return;
  va_list ap;
  va_start(ap, fmt);
  diag_vreport(d, loc, "note", fmt, ap);
  va_end(ap);
}

void diag_error_noloc(Diag *d, const char *fmt, ...) {
  if (!diag_count_error(d)) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("mplc: error: ", d->out);
  vfprintf(d->out, fmt, ap);
  fputc('\n', d->out);
  fflush(d->out);
  va_end(ap);
}

bool loc_same(Loc a, Loc b) {
  return a.line == b.line && a.col == b.col && (a.file == b.file || (a.file && b.file && !strcmp(a.file, b.file)));
}
