/*
 * json.c — a tiny JSON reader, enough for safetensors headers and for tests that check
 * the trace output is JSON.
 *
 * Invariants: never reads past text+len (the input need not be NUL-terminated); nesting
 * is limited (MAX_DEPTH) so garbage cannot overflow the stack; every value it returns is
 * owned by the tree and freed by mpl_json_free; on error the tree is freed and *out is
 * left as JSON null. Integers are kept exactly (is_int, i) as well as in num.
 */
#include "mpl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_DEPTH = 64 };

typedef struct JsonParser {
  const char *s, *end, *start;
  MplErr *err;
  size_t nodes, max_nodes; /* values made so far, and the most allowed (0: no limit) */
} JsonParser;

static int jfail(JsonParser *p, const char *what) {
  return mpl_errf(p->err, "JSON: %s at byte %td", what, p->s - p->start);
}

static void skip_ws(JsonParser *p) {
  while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int parse_value(JsonParser *p, MplJson *v, int depth);

static bool match_word(JsonParser *p, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n) != 0) return false;
  p->s += n;
  return true;
}

static int hex4(JsonParser *p, unsigned *out) {
  if (p->end - p->s < 4) return jfail(p, "truncated \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = *p->s++;
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return jfail(p, "bad \\u escape");
  }
  *out = v;
  return MPL_OK;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 63)); o[2] = (char)(0x80 | (cp & 63));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 63));
  o[2] = (char)(0x80 | (cp >> 6 & 63)); o[3] = (char)(0x80 | (cp & 63));
  return 4;
}

/* One escape after the backslash into o; returns bytes written or -1. */
static int parse_escape(JsonParser *p, char *o) {
  if (p->s >= p->end) return jfail(p, "truncated escape"), -1;
  char c = *p->s++;
  const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
  const char *k = c ? strchr(from, c) : NULL;
  if (k) { *o = to[k - from]; return 1; }
  if (c != 'u') return jfail(p, "bad escape"), -1;
  unsigned cp, lo;
  if (hex4(p, &cp)) return -1;
  if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
    if (p->end - p->s < 2 || p->s[0] != '\\' || p->s[1] != 'u') return jfail(p, "lone surrogate"), -1;
    p->s += 2;
    if (hex4(p, &lo)) return -1;
    if (lo < 0xDC00 || lo > 0xDFFF) return jfail(p, "bad surrogate pair"), -1;
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
  }
  return (int)put_utf8(o, cp);
}

/* A string after its opening quote; the decoded form is never longer than the source. */
static int parse_string(JsonParser *p, char **out, size_t *outlen) {
  const char *q = p->s;
  while (q < p->end && *q != '"') q += (*q == '\\') ? 2 : 1;
  if (q >= p->end) return jfail(p, "unterminated string");
  char *buf = mpl_malloc((size_t)(q - p->s) + 1);
  if (!buf) return jfail(p, "out of memory");
  size_t n = 0;
  while (*p->s != '"') {
    unsigned char c = (unsigned char)*p->s++;
    if (c < 0x20) { mpl_free(buf); return jfail(p, "control character in string"); }
    if (c != '\\') { buf[n++] = (char)c; continue; }
    int k = parse_escape(p, buf + n);
    if (k < 0) { mpl_free(buf); return MPL_ERR; }
    n += (size_t)k;
  }
  p->s++;
  buf[n] = 0;
  *out = buf;
  *outlen = n;
  return MPL_OK;
}

static int parse_number(JsonParser *p, MplJson *v) {
  const char *a = p->s;
  if (p->s < p->end && *p->s == '-') p->s++;
  if (p->s >= p->end || *p->s < '0' || *p->s > '9') return jfail(p, "bad number");
  if (*p->s == '0') p->s++;
  else while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
  bool integral = true;
  if (p->s < p->end && *p->s == '.') {
    integral = false;
    p->s++;
    if (p->s >= p->end || *p->s < '0' || *p->s > '9') return jfail(p, "bad number");
    while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
  }
  if (p->s < p->end && (*p->s == 'e' || *p->s == 'E')) {
    integral = false;
    p->s++;
    if (p->s < p->end && (*p->s == '+' || *p->s == '-')) p->s++;
    if (p->s >= p->end || *p->s < '0' || *p->s > '9') return jfail(p, "bad number");
    while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
  }
  char tmp[64];
  size_t n = (size_t)(p->s - a);
  if (n >= sizeof tmp) return jfail(p, "number too long");
  memcpy(tmp, a, n);
  tmp[n] = 0;
  v->type = MPL_JSON_NUM;
  v->num = strtod(tmp, NULL);
  if (integral) {
    errno = 0;
    long long i = strtoll(tmp, NULL, 10);
    v->is_int = errno == 0;
    v->i = i;
  }
  return MPL_OK;
}

/* Appends an empty element to an array/object under construction. */
static MplJson *push_item(JsonParser *p, MplJson *v, int *cap) {
  if (v->n == *cap) {
    int nc = *cap ? *cap * 2 : 4;
    MplJson *items = mpl_realloc(v->items, (size_t)nc * sizeof *items);
    char **keys = v->type == MPL_JSON_OBJ ? mpl_realloc(v->keys, (size_t)nc * sizeof *keys) : NULL;
    if (items) v->items = items;
    if (keys) v->keys = keys;
    if (!items || (v->type == MPL_JSON_OBJ && !keys)) return jfail(p, "out of memory"), NULL;
    *cap = nc;
  }
  if (p->max_nodes && ++p->nodes > p->max_nodes) return jfail(p, "too many values"), NULL;
  MplJson *e = &v->items[v->n];
  memset(e, 0, sizeof *e);
  if (v->type == MPL_JSON_OBJ) v->keys[v->n] = NULL;
  v->n++;
  return e;
}

/* '[' value (',' value)* ']' or '{' string ':' value (',' ...)* '}' after the bracket. */
static int parse_container(JsonParser *p, MplJson *v, int depth, bool obj) {
  v->type = obj ? MPL_JSON_OBJ : MPL_JSON_ARR;
  char close = obj ? '}' : ']';
  int cap = 0;
  skip_ws(p);
  if (p->s < p->end && *p->s == close) { p->s++; return MPL_OK; }
  for (;;) {
    MplJson *e = push_item(p, v, &cap);
    if (!e) return MPL_ERR;
    if (obj) {
      skip_ws(p);
      size_t kl;
      if (p->s >= p->end || *p->s != '"') return jfail(p, "expected a key string");
      p->s++;
      if (parse_string(p, &v->keys[v->n - 1], &kl)) return MPL_ERR;
      if (strlen(v->keys[v->n - 1]) != kl) return jfail(p, "a key holds a NUL character"); /* "w\u0000.x" read as w */
      skip_ws(p);
      if (p->s >= p->end || *p->s != ':') return jfail(p, "expected ':'");
      p->s++;
    }
    if (parse_value(p, e, depth + 1)) return MPL_ERR;
    skip_ws(p);
    if (p->s < p->end && *p->s == ',') { p->s++; continue; }
    if (p->s < p->end && *p->s == close) { p->s++; return MPL_OK; }
    return jfail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static int parse_value(JsonParser *p, MplJson *v, int depth) {
  if (depth > MAX_DEPTH) return jfail(p, "nested too deeply");
  skip_ws(p);
  if (p->s >= p->end) return jfail(p, "unexpected end of input");
  char c = *p->s;
  if (c == '{' || c == '[') { p->s++; return parse_container(p, v, depth, c == '{'); }
  if (c == '"') { p->s++; v->type = MPL_JSON_STR; return parse_string(p, &v->str, &v->len); }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
  if (match_word(p, "true")) { v->type = MPL_JSON_BOOL; v->b = true; return MPL_OK; }
  if (match_word(p, "false")) { v->type = MPL_JSON_BOOL; return MPL_OK; }
  if (match_word(p, "null")) { v->type = MPL_JSON_NULL; return MPL_OK; }
  return jfail(p, "unexpected character");
}

int mpl_json_parse(const char *text, size_t len, MplJson *out, MplErr *err) {
  return mpl_json_parse_max(text, len, 0, out, err);
}

int mpl_json_parse_max(const char *text, size_t len, size_t max_values, MplJson *out, MplErr *err) {
  JsonParser p = {.s = text, .end = text + len, .start = text, .err = err, .max_nodes = max_values};
  memset(out, 0, sizeof *out);
  if (parse_value(&p, out, 0) == MPL_OK) {
    skip_ws(&p);
    if (p.s == p.end) return MPL_OK;
    jfail(&p, "trailing characters after the value");
  }
  mpl_json_free(out);
  return MPL_ERR;
}

void mpl_json_free(MplJson *v) {
  if (!v) return;
  for (int i = 0; i < v->n; i++) {
    mpl_json_free(&v->items[i]);
    if (v->keys) mpl_free(v->keys[i]);
  }
  mpl_free(v->items);
  mpl_free(v->keys);
  mpl_free(v->str);
  memset(v, 0, sizeof *v);
}

const MplJson *mpl_json_get(const MplJson *obj, const char *key) {
  if (!obj || obj->type != MPL_JSON_OBJ) return NULL;
  for (int i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
  return NULL;
}
