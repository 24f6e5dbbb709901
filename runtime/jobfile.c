/*
 * jobfile.c — the byte-level container of the job file; the manifest on top of it is the
 * job loader's business.
 *
 * Layout (all little-endian):
 *   header   magic "MPLJOB\0\1" (8), u32 version, u32 flags, u64 file size,
 *            u64 FNV-1a 64 of every byte after the header
 *   sections u32 tag (four chars), u32 reserved (0), u64 length, bytes, zero padding to 8
 *   values   u8/u32/u64/i64/f64 raw; str = u32 length, bytes, NUL
 *
 * Invariants: after mpl_job_parse succeeds, the sections exactly tile the bytes after the
 * header and each lies inside the file. A cursor never reads outside its section: every
 * read checks the remaining length first, and on failure the cursor is marked failed with
 * its first message and returns zeros from then on, so a parser on top can read a whole
 * record and check `failed` once. Strings are returned in place (their NUL is checked).
 */
#include "mpl.h"

#include <stdarg.h>
#include <string.h>

uint64_t mpl_fnv1a64(const void *data, size_t n) {
  const uint8_t *p = data;
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}

uint64_t mpl_fnv1a64_words(uint64_t h, const void *data, size_t n) {
  const uint8_t *p = data;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001B3ull;
  }
  for (; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* ---- the writer ------------------------------------------------------------- */

static void jw_fail(MplJobWriter *w, const char *msg) {
  if (!w->failed) mpl_errf(&w->err, "job writer: %s", msg);
  w->failed = true;
}

/* Room for n more bytes; returns where they go, or NULL (and the writer is failed). */
static uint8_t *jw_reserve(MplJobWriter *w, size_t n) {
  if (w->failed) return NULL;
  if (w->len + n > w->cap) {
    size_t nc = w->cap ? w->cap : 4096;
    while (nc < w->len + n) nc *= 2;
    uint8_t *b = mpl_realloc(w->buf, nc);
    if (!b) return jw_fail(w, "out of memory"), NULL;
    w->buf = b, w->cap = nc;
  }
  uint8_t *p = w->buf + w->len;
  w->len += n;
  return p;
}

void mpl_jw_init(MplJobWriter *w) {
  memset(w, 0, sizeof *w);
  uint8_t *h = jw_reserve(w, MPL_JOB_HEADER);
  if (h) memset(h, 0, MPL_JOB_HEADER);
}

void mpl_jw_free(MplJobWriter *w) {
  mpl_free(w->buf);
  memset(w, 0, sizeof *w);
}

static void jw_le(MplJobWriter *w, uint64_t v, int n) {
  uint8_t *p = jw_reserve(w, (size_t)n);
  if (p) put_le(p, v, n);
}

void mpl_jw_u8(MplJobWriter *w, uint8_t v) { jw_le(w, v, 1); }
void mpl_jw_u32(MplJobWriter *w, uint32_t v) { jw_le(w, v, 4); }
void mpl_jw_u64(MplJobWriter *w, uint64_t v) { jw_le(w, v, 8); }
void mpl_jw_i64(MplJobWriter *w, int64_t v) { jw_le(w, (uint64_t)v, 8); }

void mpl_jw_f64(MplJobWriter *w, double v) {
  uint64_t bits;
  memcpy(&bits, &v, 8);
  jw_le(w, bits, 8);
}

void mpl_jw_bytes(MplJobWriter *w, const void *p, size_t n) {
  uint8_t *d = jw_reserve(w, n);
  if (d && n) memcpy(d, p, n);
}

void mpl_jw_str(MplJobWriter *w, const char *s) {
  size_t n = strlen(s);
  if (n > MPL_JOB_MAX_STR) return jw_fail(w, "string too long");
  mpl_jw_u32(w, (uint32_t)n);
  mpl_jw_bytes(w, s, n + 1);
}

void mpl_jw_begin(MplJobWriter *w, uint32_t tag) {
  if (w->section) return jw_fail(w, "section begun inside another section");
  size_t at = w->len;
  mpl_jw_u32(w, tag);
  mpl_jw_u32(w, 0);
  mpl_jw_u64(w, 0); /* the length, filled in by end */
  w->section = at;
}

void mpl_jw_end(MplJobWriter *w) {
  if (!w->section) return jw_fail(w, "section ended but none was begun");
  if (w->failed) return;
  uint64_t len = w->len - w->section - 16;
  put_le(w->buf + w->section + 8, len, 8);
  w->section = 0;
  size_t pad = (8 - w->len % 8) % 8;
  uint8_t *p = jw_reserve(w, pad);
  if (p) memset(p, 0, pad);
}

int mpl_jw_finish(MplJobWriter *w, uint32_t flags, MplErr *err) {
  if (w->section) jw_fail(w, "a section was left open");
  if (w->failed) return mpl_errf(err, "%s", w->err.msg);
  memcpy(w->buf, MPL_JOB_MAGIC, 8);
  put_le(w->buf + 8, MPL_JOB_VERSION, 4);
  put_le(w->buf + 12, flags, 4);
  put_le(w->buf + 16, w->len, 8);
  put_le(w->buf + 24, mpl_fnv1a64(w->buf + MPL_JOB_HEADER, w->len - MPL_JOB_HEADER), 8);
  return MPL_OK;
}

int mpl_jw_save(MplJobWriter *w, const char *path, uint32_t flags, MplErr *err) {
  if (mpl_jw_finish(w, flags, err)) return mpl_errf(err, "%s: %s", path, w->err.msg);
  MplAtomicFile af;
  if (mpl_afile_open(&af, path, err)) return MPL_ERR;
  if (mpl_afile_write(&af, w->buf, w->len, err)) {
    mpl_afile_abort(&af);
    return MPL_ERR;
  }
  return mpl_afile_commit(&af, err);
}

/* ---- the reader ------------------------------------------------------------- */

char *mpl_job_tag_str(uint32_t tag, char *buf) {
  for (int i = 0; i < 4; i++) {
    uint8_t c = (uint8_t)(tag >> (8 * i));
    buf[i] = c >= 0x20 && c < 0x7F ? (char)c : '?';
  }
  buf[4] = 0;
  return buf;
}

void mpl_job_free(MplJob *job) {
  mpl_free(job->bytes);
  mpl_free(job->sections);
  memset(job, 0, sizeof *job);
}

static int check_header(const uint8_t *b, size_t len, const char *what, MplErr *err) {
  if (len < MPL_JOB_HEADER) return mpl_errf(err, "%s: too short to be a job file (%zu bytes)", what, len);
  if (memcmp(b, MPL_JOB_MAGIC, 8) != 0) return mpl_errf(err, "%s: not a job file (bad magic)", what);
  uint32_t version = (uint32_t)get_le(b + 8, 4);
  if (version != MPL_JOB_VERSION)
    return mpl_errf(err, "%s: job file format version %u, but this mplrun reads version %u (recompile with mplc)",
                    what, version, MPL_JOB_VERSION);
  uint64_t size = get_le(b + 16, 8);
  if (size != len)
    return mpl_errf(err, "%s: the header says %llu bytes but the file has %zu (%s)", what, (unsigned long long)size,
                    len, size > len ? "truncated" : "trailing garbage");
  if (get_le(b + 24, 8) != mpl_fnv1a64(b + MPL_JOB_HEADER, len - MPL_JOB_HEADER))
    return mpl_errf(err, "%s: checksum mismatch: the job file is corrupted", what);
  return MPL_OK;
}

/* Walks the section framing; counts first (sections == NULL), then fills. */
static int walk_sections(MplJob *job, MplJobSection *out, const char *what, MplErr *err) {
  size_t at = MPL_JOB_HEADER;
  int n = 0;
  while (at < job->len) {
    if (job->len - at < 16) return mpl_errf(err, "%s: truncated section header at byte %zu", what, at);
    uint32_t tag = (uint32_t)get_le(job->bytes + at, 4);
    uint64_t slen = get_le(job->bytes + at + 8, 8);
    uint64_t room = job->len - at - 16;
    if (get_le(job->bytes + at + 4, 4) != 0 || slen > room || (room - slen) < (8 - (at + 16 + slen) % 8) % 8)
      return mpl_errf(err, "%s: bad section header at byte %zu", what, at);
    if (out) out[n] = (MplJobSection){.tag = tag, .data = job->bytes + at + 16, .len = slen};
    n++;
    at += 16 + slen;
    at += (8 - at % 8) % 8;
  }
  job->nsections = n;
  return MPL_OK;
}

int mpl_job_parse(MplJob *job, const void *data, size_t len, const char *what, MplErr *err) {
  memset(job, 0, sizeof *job);
  if (check_header(data, len, what, err)) return MPL_ERR;
  job->bytes = mpl_malloc(len + 1);
  if (!job->bytes) return mpl_errf(err, "%s: out of memory", what);
  memcpy(job->bytes, data, len);
  job->len = len;
  job->version = (uint32_t)get_le(job->bytes + 8, 4);
  job->flags = (uint32_t)get_le(job->bytes + 12, 4);
  if (walk_sections(job, NULL, what, err)) goto fail;
  job->sections = mpl_malloc((size_t)job->nsections * sizeof *job->sections + 1);
  if (!job->sections) {
    mpl_errf(err, "%s: out of memory", what);
    goto fail;
  }
  if (walk_sections(job, job->sections, what, err) == MPL_OK) return MPL_OK;
fail:
  mpl_job_free(job);
  return MPL_ERR;
}

int mpl_job_load(MplJob *job, const char *path, MplErr *err) {
  uint8_t *b;
  size_t len;
  memset(job, 0, sizeof *job);
  if (mpl_file_read_all(path, &b, &len, err)) return MPL_ERR;
  int rc = mpl_job_parse(job, b, len, path, err);
  mpl_free(b);
  return rc;
}

const MplJobSection *mpl_job_section(const MplJob *job, uint32_t tag) {
  for (int i = 0; i < job->nsections; i++)
    if (job->sections[i].tag == tag) return &job->sections[i];
  return NULL;
}

/* ---- cursors ------------------------------------------------------------------ */

void mpl_cur_init(MplCursor *c, const MplJobSection *s) {
  memset(c, 0, sizeof *c);
  if (!s) {
    c->failed = true;
    mpl_errf(&c->err, "job file: a required section is missing");
    return;
  }
  c->p = s->data;
  c->len = s->len;
  c->tag = s->tag;
}

void mpl_cur_fail(MplCursor *c, const char *fmt, ...) {
  if (c->failed) return;
  c->failed = true;
  char tag[5], msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  mpl_errf(&c->err, "job file: section %s, byte %llu: %s", mpl_job_tag_str(c->tag, tag),
           (unsigned long long)c->pos, msg);
}

/* n bytes at the cursor, advancing; NULL (and failed) if fewer remain. */
static const uint8_t *cur_take(MplCursor *c, uint64_t n, const char *what) {
  if (c->failed) return NULL;
  if (n > c->len - c->pos) {
    mpl_cur_fail(c, "truncated: %s needs %llu bytes, %llu left", what, (unsigned long long)n,
                 (unsigned long long)(c->len - c->pos));
    return NULL;
  }
  const uint8_t *p = c->p + c->pos;
  c->pos += n;
  return p;
}

uint8_t mpl_cur_u8(MplCursor *c) {
  const uint8_t *p = cur_take(c, 1, "u8");
  return p ? *p : 0;
}

uint32_t mpl_cur_u32(MplCursor *c) {
  const uint8_t *p = cur_take(c, 4, "u32");
  return p ? (uint32_t)get_le(p, 4) : 0;
}

uint64_t mpl_cur_u64(MplCursor *c) {
  const uint8_t *p = cur_take(c, 8, "u64");
  return p ? get_le(p, 8) : 0;
}

int64_t mpl_cur_i64(MplCursor *c) { return (int64_t)mpl_cur_u64(c); }

double mpl_cur_f64(MplCursor *c) {
  uint64_t bits = mpl_cur_u64(c);
  double v;
  memcpy(&v, &bits, 8);
  return v;
}

const void *mpl_cur_bytes(MplCursor *c, uint64_t n) { return cur_take(c, n, "a byte block"); }

const char *mpl_cur_str(MplCursor *c) {
  uint32_t n = mpl_cur_u32(c);
  if (c->failed) return NULL;
  if (n > MPL_JOB_MAX_STR) return mpl_cur_fail(c, "string length %u is too large", n), NULL;
  const char *s = (const char *)cur_take(c, (uint64_t)n + 1, "a string");
  if (!s) return NULL;
  if (s[n] != 0 || memchr(s, 0, n)) return mpl_cur_fail(c, "malformed string"), NULL;
  return s;
}

uint32_t mpl_cur_count(MplCursor *c, uint32_t max, uint32_t min_elem_bytes, const char *what) {
  uint32_t n = mpl_cur_u32(c);
  if (c->failed) return 0;
  if (n > max) return mpl_cur_fail(c, "%s count %u exceeds the limit %u", what, n, max), 0;
  if ((uint64_t)n * min_elem_bytes > c->len - c->pos)
    return mpl_cur_fail(c, "%s count %u does not fit in the %llu bytes left", what, n,
                        (unsigned long long)(c->len - c->pos)), 0;
  return n;
}

bool mpl_cur_at_end(const MplCursor *c) { return !c->failed && c->pos == c->len; }
