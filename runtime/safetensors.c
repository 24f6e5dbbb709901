/*
 * safetensors.c — params and checkpoints on disk: reading and writing .safetensors files
 * (8-byte little-endian header length, a JSON header, then the data section).
 *
 * Invariants after mpl_st_open succeeds: the header length fits the file; the header is
 * valid JSON whose every entry but __metadata__ is a tensor {"dtype", "shape",
 * "data_offsets"} with one of the format's dtypes (only F32, F16 and BF16 are read), a
 * shape of non-negative dims (only tensors of at most MPL_ST_MAX_DIM are read: a longer one,
 * another tool's, has numel -1 and its first dims unset), offsets inside the data section
 * that span exactly numel * dtype size bytes, no two tensors overlapping and no two names equal;
 * tensors are sorted by name. So a read never goes outside the file. Reads use pread, so
 * threads may share one open file. The writer always writes F32, in name order, atomically.
 */
#include "mpl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const dtype_names[] = {
    [MPL_ST_F32] = "F32", [MPL_ST_F16] = "F16",   [MPL_ST_BF16] = "BF16", [MPL_ST_F64] = "F64",
    [MPL_ST_I64] = "I64", [MPL_ST_U64] = "U64",   [MPL_ST_I32] = "I32",   [MPL_ST_U32] = "U32",
    [MPL_ST_I16] = "I16", [MPL_ST_U16] = "U16",   [MPL_ST_I8] = "I8",     [MPL_ST_U8] = "U8",
    [MPL_ST_BOOL] = "BOOL", [MPL_ST_F8_E4M3] = "F8_E4M3", [MPL_ST_F8_E5M2] = "F8_E5M2",
    [MPL_ST_OTHER] = "(another type)"};
static const int dtype_sizes[] = {
    [MPL_ST_F32] = 4, [MPL_ST_F16] = 2, [MPL_ST_BF16] = 2, [MPL_ST_F64] = 8, [MPL_ST_I64] = 8,
    [MPL_ST_U64] = 8, [MPL_ST_I32] = 4, [MPL_ST_U32] = 4,  [MPL_ST_I16] = 2, [MPL_ST_U16] = 2,
    [MPL_ST_I8] = 1,  [MPL_ST_U8] = 1,  [MPL_ST_BOOL] = 1, [MPL_ST_F8_E4M3] = 1, [MPL_ST_F8_E5M2] = 1,
    [MPL_ST_OTHER] = 0};
_Static_assert(sizeof dtype_names / sizeof *dtype_names == MPL_ST__COUNT, "a name for each dtype");
_Static_assert(sizeof dtype_sizes / sizeof *dtype_sizes == MPL_ST__COUNT, "a size for each dtype");

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
  if (exp == 31) bits = sign | 0x7F800000u | (man << 13);
  else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);
  else if (!man) bits = sign;
  else { /* subnormal: normalise */
    int e = -1;
    do { man <<= 1; e++; } while (!(man & 1024));
    bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 1023) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

void mpl_st_free(MplSafetensors *st) {
  if (st->f) fclose(st->f);
  for (int i = 0; i < st->n; i++) mpl_free(st->tensors[i].name);
  for (int i = 0; i < st->nmeta; i++) mpl_free(st->meta_keys[i]), mpl_free(st->meta_values[i]);
  mpl_free(st->tensors);
  mpl_free(st->meta_keys);
  mpl_free(st->meta_values);
  mpl_free(st->path);
  memset(st, 0, sizeof *st);
}

/* A non-negative exact integer JSON value, or -1. */
static int64_t json_uint(const MplJson *v) {
  return v && v->type == MPL_JSON_NUM && v->is_int && v->i >= 0 ? v->i : -1;
}

static int parse_dtype(const MplSafetensors *st, const char *name, const MplJson *d, MplStTensor *t, MplErr *err) {
  if (!d || d->type != MPL_JSON_STR) return mpl_errf(err, "%s: tensor '%s': missing \"dtype\"", st->path, name);
  snprintf(t->dtype_str, sizeof t->dtype_str, "%s", d->str);
  for (int k = 0; k < MPL_ST_OTHER; k++)
    if (strcmp(d->str, dtype_names[k]) == 0) { t->dtype = (MplStDtype)k; return MPL_OK; }
  /* a newer type of the format: kept (its bytes unchecked), refused only if read */
  bool word = d->str[0] != 0;
  for (const char *c = d->str; *c && word; c++) word = (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_';
  if (!word) return mpl_errf(err, "%s: tensor '%s': dtype \"%s\" is not a safetensors type", st->path, name, d->str);
  t->dtype = MPL_ST_OTHER;
  return MPL_OK;
}

static int parse_shape(const MplSafetensors *st, const char *name, const MplJson *s, MplStTensor *t, MplErr *err) {
  if (!s || s->type != MPL_JSON_ARR) return mpl_errf(err, "%s: tensor '%s': missing \"shape\" array", st->path, name);
  t->ndim = s->n;
  if (s->n > MPL_ST_MAX_DIM) { /* kept (another tool's tensor), its size unchecked; refused only when read */
    t->numel = -1;
    return MPL_OK;
  }
  t->numel = 1;
  for (int k = 0; k < s->n; k++) {
    int64_t d = json_uint(&s->items[k]);
    if (d < 0) return mpl_errf(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", st->path, name, k);
    t->shape[k] = d;
    if (d && t->numel > INT64_MAX / 8 / d) return mpl_errf(err, "%s: tensor '%s': shape too large", st->path, name);
    t->numel *= d;
  }
  return MPL_OK;
}

/* One header entry into t, checked against the data section size. */
static int parse_tensor(const MplSafetensors *st, const char *name, const MplJson *v, uint64_t data_len,
                        MplStTensor *t, MplErr *err) {
  if (v->type != MPL_JSON_OBJ) return mpl_errf(err, "%s: tensor '%s': entry is not an object", st->path, name);
  if (v->n > 16) /* an entry has three fields (and perhaps a few of another writer's): the
                    pairwise check below stays small (pass 63: 100,000 keys took 23 s) */
    return mpl_errf(err, "%s: tensor '%s': %d fields in its entry (dtype, shape, data_offsets)", st->path, name, v->n);
  for (int i = 0; i < v->n; i++) /* {"shape": [4, 2], "shape": [8]}: readers differ on which */
    for (int k = 0; k < i; k++)
      if (!strcmp(v->keys[i], v->keys[k]))
        return mpl_errf(err, "%s: tensor '%s': \"%s\" is given twice", st->path, name, v->keys[i]);
  if (parse_dtype(st, name, mpl_json_get(v, "dtype"), t, err)) return MPL_ERR;
  if (parse_shape(st, name, mpl_json_get(v, "shape"), t, err)) return MPL_ERR;
  const MplJson *o = mpl_json_get(v, "data_offsets");
  if (!o || o->type != MPL_JSON_ARR || o->n != 2 || json_uint(&o->items[0]) < 0 || json_uint(&o->items[1]) < 0)
    return mpl_errf(err, "%s: tensor '%s': \"data_offsets\" must be [begin, end]", st->path, name);
  t->begin = (uint64_t)o->items[0].i;
  t->end = (uint64_t)o->items[1].i;
  if (t->begin > t->end || t->end > data_len)
    return mpl_errf(err, "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section (%llu bytes)",
                    st->path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                    (unsigned long long)data_len);
  uint64_t want = (uint64_t)t->numel * (uint64_t)dtype_sizes[t->dtype];
  if (t->dtype != MPL_ST_OTHER && t->numel >= 0 && t->end - t->begin != want)
    return mpl_errf(err, "%s: tensor '%s': data_offsets span %llu bytes but shape and dtype need %llu",
                    st->path, name, (unsigned long long)(t->end - t->begin), (unsigned long long)want);
  t->name = mpl_strdup(name);
  return t->name ? MPL_OK : mpl_errf(err, "%s: out of memory", st->path);
}

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp(((const MplStTensor *)a)->name, ((const MplStTensor *)b)->name);
}

static int cmp_tensor_begin(const void *a, const void *b) {
  const MplStTensor *x = *(const MplStTensor *const *)a, *y = *(const MplStTensor *const *)b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Duplicate names (after sorting) and overlapping byte ranges are errors. */
static int check_layout(MplSafetensors *st, MplErr *err) {
  qsort(st->tensors, (size_t)st->n, sizeof *st->tensors, cmp_tensor_name);
  for (int i = 1; i < st->n; i++)
    if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
      return mpl_errf(err, "%s: duplicate tensor name '%s'", st->path, st->tensors[i].name);
  const MplStTensor **by = mpl_malloc((size_t)st->n * sizeof *by + 1);
  if (!by) return mpl_errf(err, "%s: out of memory", st->path);
  for (int i = 0; i < st->n; i++) by[i] = &st->tensors[i];
  qsort(by, (size_t)st->n, sizeof *by, cmp_tensor_begin);
  int rc = MPL_OK;
  for (int i = 1; i < st->n && rc == MPL_OK; i++)
    if (by[i]->begin < by[i - 1]->end)
      rc = mpl_errf(err, "%s: tensors '%s' and '%s' overlap in the data section", st->path, by[i - 1]->name,
                    by[i]->name);
  mpl_free(by);
  return rc;
}

/* __metadata__: an object of strings, kept sorted by key. */
static int parse_meta(MplSafetensors *st, const MplJson *m, MplErr *err) {
  if (m->type != MPL_JSON_OBJ) return mpl_errf(err, "%s: __metadata__ is not an object", st->path);
  st->meta_keys = mpl_calloc((size_t)m->n + 1, sizeof(char *));
  st->meta_values = mpl_calloc((size_t)m->n + 1, sizeof(char *));
  if (!st->meta_keys || !st->meta_values) return mpl_errf(err, "%s: out of memory", st->path);
  for (int i = 0; i < m->n; i++) {
    if (m->items[i].type != MPL_JSON_STR)
      return mpl_errf(err, "%s: __metadata__ value of '%s' is not a string", st->path, m->keys[i]);
    int j = st->nmeta;
    st->meta_keys[j] = mpl_strdup(m->keys[i]);
    st->meta_values[j] = mpl_strdup(m->items[i].str);
    st->nmeta++;
    if (!st->meta_keys[j] || !st->meta_values[j]) return mpl_errf(err, "%s: out of memory", st->path);
    for (; j > 0 && strcmp(st->meta_keys[j - 1], st->meta_keys[j]) > 0; j--) { /* insertion sort */
      char *k = st->meta_keys[j], *v = st->meta_values[j];
      st->meta_keys[j] = st->meta_keys[j - 1], st->meta_values[j] = st->meta_values[j - 1];
      st->meta_keys[j - 1] = k, st->meta_values[j - 1] = v;
    }
  }
  return MPL_OK;
}

static int parse_header(MplSafetensors *st, const MplJson *h, uint64_t data_len, MplErr *err) {
  if (h->type != MPL_JSON_OBJ) return mpl_errf(err, "%s: the header is not a JSON object", st->path);
  st->tensors = mpl_calloc((size_t)h->n + 1, sizeof *st->tensors);
  if (!st->tensors) return mpl_errf(err, "%s: out of memory", st->path);
  for (int i = 0; i < h->n; i++) {
    if (strcmp(h->keys[i], "__metadata__") == 0) {
      if (st->meta_keys) return mpl_errf(err, "%s: two __metadata__ entries", st->path);
      if (parse_meta(st, &h->items[i], err)) return MPL_ERR;
      continue;
    }
    if (parse_tensor(st, h->keys[i], &h->items[i], data_len, &st->tensors[st->n], err)) return MPL_ERR;
    st->n++;
  }
  return check_layout(st, err);
}

/* The 8-byte length and the JSON text, checked against the file size. */
static int read_header(MplSafetensors *st, MplJson *h, MplErr *err) {
  struct stat sb;
  uint8_t lenb[8];
  if (fstat(fileno(st->f), &sb) != 0) return mpl_errf(err, "%s: cannot stat", st->path);
  if (S_ISDIR(sb.st_mode))
    return mpl_errf(err, "%s: is a folder, not a safetensors file (a checkpoint folder is given to --resume; its "
                    "params alone are its model.safetensors)", st->path);
  uint64_t fsize = (uint64_t)sb.st_size, hlen = 0;
  if (fsize < 8 || fread(lenb, 1, 8, st->f) != 8)
    return mpl_errf(err, "%s: too short to be a safetensors file (%llu bytes)", st->path, (unsigned long long)fsize);
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenb[i];
  if (hlen > fsize - 8)
    return mpl_errf(err, "%s: header length %llu exceeds the file size (%llu bytes): truncated or not safetensors",
                    st->path, (unsigned long long)hlen, (unsigned long long)fsize);
  if (hlen > MPL_ST_MAX_HEADER) return mpl_errf(err, "%s: header of %llu bytes is too large", st->path, (unsigned long long)hlen);
  char *text = mpl_malloc((size_t)hlen + 1);
  if (!text) return mpl_errf(err, "%s: out of memory", st->path);
  int rc = fread(text, 1, (size_t)hlen, st->f) == hlen ? MPL_OK : mpl_errf(err, "%s: read error in header", st->path);
  MplErr jerr;
  /* a tensor's entry is about 15 values: 2^21 allow 140,000 tensors, and bound the tree
     (a 90 MB header of one shape of 45 million zeros took 4.8 GB) */
  if (rc == MPL_OK && mpl_json_parse_max(text, (size_t)hlen, (size_t)1 << 21, h, &jerr))
    rc = mpl_errf(err, "%s: bad header: %s", st->path, jerr.msg);
  mpl_free(text);
  if (rc == MPL_OK) {
    st->data_start = 8 + hlen;
    rc = parse_header(st, h, fsize - st->data_start, err);
  }
  return rc;
}

int mpl_st_open(MplSafetensors *st, const char *path, MplErr *err) {
  memset(st, 0, sizeof *st);
  st->path = mpl_strdup(path);
  if (!st->path) return mpl_errf(err, "%s: out of memory", path);
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    mpl_errf(err, "%s: is a folder, not a safetensors file (a checkpoint folder is given to --resume; its params "
             "alone are its model.safetensors)", path);
    mpl_st_free(st);
    return MPL_ERR;
  }
  st->f = mpl_fopen_regular(path, err);
  if (!st->f) {
    mpl_st_free(st);
    return MPL_ERR;
  }
  MplJson h;
  memset(&h, 0, sizeof h);
  int rc = read_header(st, &h, err);
  mpl_json_free(&h);
  if (rc) mpl_st_free(st);
  return rc;
}

const MplStTensor *mpl_st_find(const MplSafetensors *st, const char *name) {
  int lo = 0, hi = st->n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2, c = strcmp(st->tensors[mid].name, name);
    if (c == 0) return &st->tensors[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return NULL;
}

const char *mpl_st_meta(const MplSafetensors *st, const char *key) {
  for (int i = 0; i < st->nmeta; i++)
    if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
  return NULL;
}

/* Converts n 2-byte values in place: the raw halves sit in the first half of out. */
static void widen_16(float *out, int64_t n, MplStDtype dt) {
  const uint8_t *raw = (const uint8_t *)out;
  for (int64_t i = n - 1; i >= 0; i--) { /* backwards: each write lands after its source */
    uint16_t h = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
    out[i] = dt == MPL_ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

/* pread, so rank threads may read tensors of one open file at the same time. */
int mpl_st_read_f32(const MplSafetensors *st, const MplStTensor *t, float *out, MplErr *err) {
  if (t->ndim > MPL_ST_MAX_DIM)
    return mpl_errf(err, "%s: tensor '%s' has %d dims; a param has at most %d", st->path, t->name, t->ndim, MPL_ST_MAX_DIM);
  if (t->dtype > MPL_ST_BF16)
    return mpl_errf(err, "%s: tensor '%s' is %s; a param is read from F32, F16 or BF16", st->path, t->name,
                    t->dtype_str);
  size_t bytes = (size_t)(t->end - t->begin), got = 0;
  while (got < bytes) {
    ssize_t k = pread(fileno(st->f), (char *)out + got, bytes - got, (off_t)(st->data_start + t->begin + got));
    if (k <= 0) return mpl_errf(err, "%s: tensor '%s': read error (file changed or truncated?)", st->path, t->name);
    got += (size_t)k;
  }
  if (t->dtype != MPL_ST_F32) widen_16(out, t->numel, t->dtype);
  return MPL_OK;
}

/* ---- writing ------------------------------------------------------------ */

/* A growable string for the header. */
typedef struct StrBuf {
  char *s;
  size_t len, cap;
  bool oom;
} StrBuf;

static void sb_printf(StrBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(StrBuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = b->oom ? -1 : vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->s && b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
    size_t nc = (b->cap + (size_t)n + 1) * 2;
    char *s = mpl_realloc(b->s, nc);
    if (!s) { b->oom = true; return; }
    b->s = s, b->cap = nc;
  }
}

/* A JSON string literal; names are plain in practice, but quote what must be quoted. */
static void sb_json_str(StrBuf *b, const char *s) {
  sb_printf(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') sb_printf(b, "\\%c", c);
    else if (c < 0x20) sb_printf(b, "\\u%04x", c);
    else sb_printf(b, "%c", c);
  }
  sb_printf(b, "\"");
}

static int cmp_entry_name(const void *a, const void *b) {
  return strcmp((*(const MplStEntry *const *)a)->name, (*(const MplStEntry *const *)b)->name);
}

static int64_t entry_numel(const MplStEntry *e) {
  int64_t n = 1;
  for (int k = 0; k < e->ndim; k++) n *= e->shape[k];
  return n;
}

/* The JSON header, padded with spaces to a multiple of 8 (as the reference writer). */
static void build_header(StrBuf *b, const MplStEntry *const *sorted, int n, const char *const *mk,
                         const char *const *mv, int nmeta) {
  sb_printf(b, "{");
  if (nmeta) {
    sb_printf(b, "\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
      sb_printf(b, i ? "," : "");
      sb_json_str(b, mk[i]);
      sb_printf(b, ":");
      sb_json_str(b, mv[i]);
    }
    sb_printf(b, "}%s", n ? "," : "");
  }
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    const MplStEntry *e = sorted[i];
    sb_json_str(b, e->name);
    sb_printf(b, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int k = 0; k < e->ndim; k++) sb_printf(b, k ? ",%lld" : "%lld", (long long)e->shape[k]);
    uint64_t bytes = (uint64_t)entry_numel(e) * 4;
    sb_printf(b, "],\"data_offsets\":[%llu,%llu]}%s", (unsigned long long)off, (unsigned long long)(off + bytes),
              i + 1 < n ? "," : "");
    off += bytes;
  }
  sb_printf(b, "}");
  while (b->len % 8 && !b->oom) sb_printf(b, " ");
}

static int write_file(const char *path, const StrBuf *h, const MplStEntry *const *sorted, int n, MplErr *err) {
  MplAtomicFile af;
  if (mpl_afile_open(&af, path, err)) return MPL_ERR;
  uint8_t lenb[8];
  for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)h->len >> (8 * i));
  int rc = mpl_afile_write(&af, lenb, 8, err);
  if (rc == MPL_OK) rc = mpl_afile_write(&af, h->s, h->len, err);
  for (int i = 0; i < n && rc == MPL_OK; i++) { /* the host is little-endian, as the format */
    const MplStEntry *t = sorted[i];
    if (!t->data && !t->fill) { /* an empty tensor has no bytes */
      if (entry_numel(t)) rc = mpl_errf(err, "%s: tensor '%s' has no data", path, t->name);
      continue;
    }
    const float *d = t->data ? t->data : t->fill(t->ctx, t->index, err);
    rc = d ? mpl_afile_write(&af, d, (size_t)entry_numel(t) * 4, err) : MPL_ERR;
  }
  if (rc) {
    mpl_afile_abort(&af);
    return MPL_ERR;
  }
  return mpl_afile_commit(&af, err);
}

int mpl_st_write_f32(const char *path, const MplStEntry *entries, int n, const char *const *meta_keys,
                     const char *const *meta_values, int nmeta, MplErr *err) {
  const MplStEntry **sorted = mpl_malloc((size_t)n * sizeof *sorted + 1);
  if (!sorted) return mpl_errf(err, "%s: out of memory", path);
  for (int i = 0; i < n; i++) sorted[i] = &entries[i];
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_entry_name);
  int rc = MPL_OK;
  for (int i = 0; i < n && rc == MPL_OK; i++) {
    if (i && strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
      rc = mpl_errf(err, "%s: duplicate tensor name '%s'", path, sorted[i]->name);
    else if (strcmp(sorted[i]->name, "__metadata__") == 0 || sorted[i]->ndim > MPL_ST_MAX_DIM || sorted[i]->ndim < 0)
      rc = mpl_errf(err, "%s: tensor '%s': bad name or rank", path, sorted[i]->name);
  }
  StrBuf h = {0};
  if (rc == MPL_OK) {
    build_header(&h, sorted, n, meta_keys, meta_values, nmeta);
    rc = h.oom ? mpl_errf(err, "%s: out of memory", path) : write_file(path, &h, sorted, n, err);
  }
  mpl_free(h.s);
  mpl_free(sorted);
  return rc;
}
