/*
 * test_rtio.c — unit tests of the runtime's building blocks: the allocator and its failure
 * hook, the JSON reader, safetensors (round trip and every validation error), llm.c token
 * files and the loader, synthetic(n), the job file container (round trip, and every
 * single-byte flip and truncation refused or parsed safely), the trace and metrics
 * writers, the profile file (round trip, and what the reader refuses), and the CPU GEMM
 * against a float64 reference.
 *
 * Every test works in its own temp directory; the binary exits non-zero on any failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "runtime/mpl.h"

#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------ */

#include "tmp_files.h"

/* A safetensors file from a header string and raw data bytes. */
static void write_st_raw(const char *path, const char *header, const void *data, size_t n) {
  size_t hl = strlen(header);
  uint8_t *b = malloc(8 + hl + n + 1);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  memcpy(b + 8, header, hl);
  if (n) memcpy(b + 8 + hl, data, n);
  write_bytes(path, b, 8 + hl + n);
  free(b);
}

static void expect_st_error(const char *header, size_t data_bytes, const char *needle) {
  uint8_t *data = calloc(1, data_bytes + 1);
  const char *p = tmp_path("bad.safetensors");
  write_st_raw(p, header, data, data_bytes);
  free(data);
  MplSafetensors st;
  MplErr err = {{0}};
  ck_assert_int_eq(mpl_st_open(&st, p, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s' (header %s)", err.msg, needle, header);
  ck_assert_msg(strstr(err.msg, "bad.safetensors") != NULL, "message '%s' does not name the file", err.msg);
}

/* ---- alloc ---------------------------------------------------------------------- */

START_TEST(test_alloc_counts) {
  MplAllocStats a, b;
  mpl_alloc_stats(&a);
  char *p = mpl_malloc(100), *q = mpl_calloc(10, 10);
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_nonnull(q);
  ck_assert_uint_eq((uintptr_t)p % 64, 0);
  mpl_alloc_stats(&b);
  ck_assert_int_eq(b.live_blocks - a.live_blocks, 2);
  ck_assert_int_eq(b.live_bytes - a.live_bytes, 200);
  memset(p, 7, 100);
  p = mpl_realloc(p, 1000);
  ck_assert_int_eq(p[99], 7);
  mpl_free(p);
  mpl_free(q);
  mpl_alloc_stats(&b);
  ck_assert_int_eq(b.live_blocks, a.live_blocks);
  ck_assert_int_eq(b.live_bytes, a.live_bytes);
  mpl_alloc_fail_nth(2);
  p = mpl_malloc(1);
  q = mpl_malloc(1);
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_null(q);
  q = mpl_malloc(1);
  ck_assert_ptr_nonnull(q);
  mpl_free(p);
  mpl_free(q);
  ck_assert_ptr_null(mpl_calloc(SIZE_MAX / 2, 4));
  /* each overflow check alone (pass 112: the case above meets both, so either could go):
     a product that wraps to 16 bytes, and a size whose header wraps */
  ck_assert_ptr_null(mpl_calloc(((size_t)1 << 62) + 4, 4));
  ck_assert_ptr_null(mpl_malloc(SIZE_MAX - 8));
  p = mpl_malloc(16);
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_null(mpl_realloc(p, SIZE_MAX - 8));
  mpl_free(p); /* a failed realloc leaves the block as it was */
  /* a big block (its own mapping): aligned, zero from calloc, counted, grown by realloc with
     its bytes, and failed by the hook like any other */
  size_t big = (size_t)24 << 20;
  mpl_alloc_stats(&a);
  float *f = mpl_calloc(big / 4, 4);
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq((uintptr_t)f % 64, 0);
  for (size_t i = 0; i < big / 4; i += 1021) ck_assert(f[i] == 0.0f);
  ck_assert(f[big / 4 - 1] == 0.0f);
  f[0] = 1.5f, f[big / 4 - 1] = -2.0f;
  mpl_alloc_stats(&b);
  ck_assert_int_eq(b.live_bytes - a.live_bytes, (int64_t)big);
  f = mpl_realloc(f, big + 4);
  ck_assert(f[0] == 1.5f && f[big / 4 - 1] == -2.0f);
  mpl_free(f);
  mpl_alloc_stats(&b);
  ck_assert_int_eq(b.live_blocks, a.live_blocks);
  ck_assert_int_eq(b.live_bytes, a.live_bytes);
  mpl_alloc_fail_nth(1);
  ck_assert_ptr_null(mpl_malloc(big));
}
END_TEST

/* ---- json ------------------------------------------------------------------------ */

START_TEST(test_json) {
  const char *s = " {\"a\": [1, -2.5e1, true, null, \"x\\u00e9\\n\"], \"b\": {}, \"big\": 9007199254740993} ";
  MplJson v;
  MplErr err;
  ck_assert_int_eq(mpl_json_parse(s, strlen(s), &v, &err), MPL_OK);
  const MplJson *a = mpl_json_get(&v, "a");
  ck_assert_int_eq(a->n, 5);
  ck_assert(a->items[0].is_int && a->items[0].i == 1);
  ck_assert(!a->items[1].is_int && a->items[1].num == -25.0);
  ck_assert_str_eq(a->items[4].str, "x\xc3\xa9\n");
  ck_assert_int_eq(mpl_json_get(&v, "big")->i, 9007199254740993LL);
  mpl_json_free(&v);
  const char *bad[] = {"", "{", "[1,]", "{\"a\" 1}", "\"abc", "01x", "[1] 2", "nul", "\"\\q\"", "-", "1.", "\"\\ud800\""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    ck_assert_msg(mpl_json_parse(bad[i], strlen(bad[i]), &v, &err) == MPL_ERR, "accepted %s", bad[i]);
  char deep[300];
  memset(deep, '[', sizeof deep);
  ck_assert_int_eq(mpl_json_parse(deep, sizeof deep, &v, &err), MPL_ERR);
  ck_assert(strstr(err.msg, "deep") != NULL);
}
END_TEST

/* ---- safetensors ------------------------------------------------------------------ */

START_TEST(test_st_roundtrip) {
  make_tmpdir("rtio");
  float w[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 42}, b[3] = {0.25f, 0.5f, 0.75f}, s[1] = {7};
  int64_t ws[2] = {2, 3}, bs[1] = {3}, zs[2] = {0, 4};
  MplStEntry e[] = {{.name = "wte", .ndim = 2, .shape = ws, .data = w},
                    {.name = "bias", .ndim = 1, .shape = bs, .data = b},
                    {.name = "scalar", .ndim = 0, .shape = NULL, .data = s},
                    {.name = "empty", .ndim = 2, .shape = zs, .data = NULL}};
  const char *mk[] = {"step", "format"}, *mv[] = {"12", "pt"};
  MplErr err = {{0}};
  const char *p = tmp_path("p.safetensors");
  ck_assert_msg(mpl_st_write_f32(p, e, 4, mk, mv, 2, &err) == MPL_OK, "%s", err.msg);
  MplSafetensors st;
  ck_assert_msg(mpl_st_open(&st, p, &err) == MPL_OK, "%s", err.msg);
  ck_assert_int_eq(st.n, 4);
  ck_assert_str_eq(st.tensors[0].name, "bias"); /* sorted */
  ck_assert_str_eq(st.tensors[3].name, "wte");
  ck_assert_str_eq(mpl_st_meta(&st, "step"), "12");
  ck_assert_ptr_null(mpl_st_meta(&st, "nope"));
  ck_assert_ptr_null(mpl_st_find(&st, "nope"));
  const MplStTensor *t = mpl_st_find(&st, "wte");
  ck_assert_int_eq(t->ndim, 2);
  ck_assert_int_eq(t->shape[1], 3);
  float out[6];
  ck_assert_int_eq(mpl_st_read_f32(&st, t, out, &err), MPL_OK);
  ck_assert_int_eq(memcmp(out, w, sizeof w), 0);
  t = mpl_st_find(&st, "scalar");
  ck_assert_int_eq(t->ndim, 0);
  ck_assert_int_eq(t->numel, 1);
  ck_assert_int_eq(mpl_st_read_f32(&st, t, out, &err), MPL_OK);
  ck_assert(out[0] == 7);
  ck_assert_int_eq(mpl_st_find(&st, "empty")->numel, 0);
  mpl_st_free(&st);
  /* duplicate names are refused by the writer; the target is untouched */
  MplStEntry dup[] = {{.name = "a", .ndim = 1, .shape = bs, .data = b},
                      {.name = "a", .ndim = 1, .shape = bs, .data = b}};
  ck_assert_int_eq(mpl_st_write_f32(p, dup, 2, NULL, NULL, 0, &err), MPL_ERR);
  ck_assert(strstr(err.msg, "duplicate") != NULL);
  ck_assert_int_eq(mpl_st_open(&st, p, &err), MPL_OK);
  ck_assert_int_eq(st.n, 4);
  mpl_st_free(&st);
  /* the header padded with spaces to a multiple of 8 bytes, as the reference writer does, so
     the data starts aligned for readers that map it (pass 115), for names of 1 to 8 bytes */
  for (int len = 1; len <= 8; len++) {
    char name[9] = "abcdefgh";
    name[len] = 0;
    MplStEntry one[] = {{.name = name, .ndim = 1, .shape = bs, .data = b}};
    const char *q = tmp_path("pad.safetensors");
    ck_assert_msg(mpl_st_write_f32(q, one, 1, NULL, NULL, 0, &err) == MPL_OK, "%s", err.msg);
    FILE *f = fopen(q, "rb");
    uint8_t head[8];
    ck_assert(f && fread(head, 1, 8, f) == 8);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)head[i] << (8 * i);
    ck_assert_msg(hlen % 8 == 0, "name of %d bytes: header of %llu bytes", len, (unsigned long long)hlen);
    char *h = malloc(hlen + 1);
    ck_assert(fread(h, 1, hlen, f) == hlen);
    fclose(f);
    int64_t end = (int64_t)hlen - 1;
    while (end > 0 && h[end] == ' ') end--;
    ck_assert_msg(h[end] == '}', "name of %d bytes: the header ends '%c', not '}' and spaces", len, h[end]);
    free(h);
  }
  remove_tmpdir();
}
END_TEST

START_TEST(test_st_half) {
  make_tmpdir("rtio");
  uint16_t h[6] = {0x3C00, 0xC000, 0x3800, 0x0001, 0x7C00, 0x3555}; /* F16 */
  uint16_t bf[2] = {0x3F80, 0xC040};                               /* BF16 */
  uint8_t data[16];
  memcpy(data, h, 12);
  memcpy(data + 12, bf, 4);
  const char *p = tmp_path("h.safetensors");
  write_st_raw(p, "{\"h\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[0,12]},"
                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[12,16]}}", data, 16);
  MplSafetensors st;
  MplErr err;
  ck_assert_msg(mpl_st_open(&st, p, &err) == MPL_OK, "%s", err.msg);
  float out[6];
  ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "h"), out, &err), MPL_OK);
  ck_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f);
  ck_assert(out[3] == ldexpf(1.0f, -24));
  ck_assert(isinf(out[4]) && out[4] > 0);
  ck_assert(fabsf(out[5] - 0.33325195f) < 1e-7f);
  ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "b"), out, &err), MPL_OK);
  ck_assert(out[0] == 1.0f && out[1] == -3.0f);
  mpl_st_free(&st);
  remove_tmpdir();
}
END_TEST

START_TEST(test_st_errors) {
  make_tmpdir("rtio");
  MplSafetensors st;
  MplErr err;
  ck_assert_int_eq(mpl_st_open(&st, tmp_path("missing.safetensors"), &err), MPL_ERR);
  ck_assert(strstr(err.msg, "cannot open") != NULL);
  ck_assert_int_eq(mpl_st_open(&st, tmpdir, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "is a folder, not a safetensors file") != NULL, "%s", err.msg);
  write_bytes(tmp_path("bad.safetensors"), "abc", 3);
  ck_assert_int_eq(mpl_st_open(&st, tmp_path("bad.safetensors"), &err), MPL_ERR);
  ck_assert(strstr(err.msg, "too short") != NULL);
  uint8_t big[12] = {0xFF, 0xFF, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
  write_bytes(tmp_path("bad.safetensors"), big, sizeof big);
  ck_assert_int_eq(mpl_st_open(&st, tmp_path("bad.safetensors"), &err), MPL_ERR);
  ck_assert(strstr(err.msg, "exceeds the file size") != NULL);
  /* a header length 1 to 8 bytes past what follows the length itself (pass 115: the bound
     taken as the whole file's size, a short read said it less plainly) */
  for (int over = 1; over <= 8; over++) {
    uint8_t f[16] = {(uint8_t)(8 + over), 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    write_bytes(tmp_path("bad.safetensors"), f, sizeof f);
    ck_assert_int_eq(mpl_st_open(&st, tmp_path("bad.safetensors"), &err), MPL_ERR);
    ck_assert_msg(strstr(err.msg, "exceeds the file size") != NULL, "header length %d: %s", 8 + over, err.msg);
  }
  const char *T = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\"";
  char h[512];
  expect_st_error("{\"a\":", 0, "bad header");
  expect_st_error("[1,2]", 0, "not a JSON object");
  expect_st_error("{\"a\":{\"dtype\":\"q 4\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "not a safetensors type");
  /* types the format gained later (F8_E8M0, F4, C64): the file opens, the tensor is kept
     with its type's name, and reading it as a param is refused naming the type */
  {
    const char *p = tmp_path("newer.safetensors");
    uint8_t data[16] = {0};
    float one = 1.0f;
    memcpy(data, &one, 4);
    write_st_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"s\":{\"dtype\":\"F8_E8M0\",\"shape\":[4],\"data_offsets\":[4,8]},"
                    "\"c\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[8,16]}}", data, 16);
    ck_assert_msg(mpl_st_open(&st, p, &err) == MPL_OK, "%s", err.msg);
    float v = 0;
    ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "a"), &v, &err), MPL_OK);
    ck_assert(v == 1.0f);
    const MplStTensor *q = mpl_st_find(&st, "s");
    ck_assert(q && q->dtype == MPL_ST_OTHER && !strcmp(q->dtype_str, "F8_E8M0"));
    float w[4];
    ck_assert_int_eq(mpl_st_read_f32(&st, q, w, &err), MPL_ERR);
    ck_assert_msg(strstr(err.msg, "'s' is F8_E8M0"), "%s", err.msg);
    mpl_st_free(&st);
  }
  expect_st_error("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "need 8");
  /* an empty tensor claiming bytes (pass 115: the span went unchecked at numel 0) */
  expect_st_error("{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,8]}}", 8, "span 8 bytes but shape and dtype need 0");
  expect_st_error("{\"a\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4, "need 3");
  expect_st_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
  snprintf(h, sizeof h, "{\"a\":{%s:[0,8]}}", T);
  expect_st_error(h, 4, "outside the data section");
  snprintf(h, sizeof h, "{\"a\":{%s:[0,12]}}", T);
  expect_st_error(h, 12, "need 8");
  snprintf(h, sizeof h, "{\"a\":{%s:[0,8]},\"b\":{%s:[4,12]}}", T, T);
  expect_st_error(h, 12, "overlap");
  snprintf(h, sizeof h, "{\"a\":{%s:[0,8]},\"a\":{%s:[8,16]}}", T, T);
  expect_st_error(h, 16, "duplicate tensor name 'a'");
  expect_st_error("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
  expect_st_error("{\"a\":3}", 0, "not an object");
  remove_tmpdir();
}
END_TEST

/* A file may hold tensors of the format's other dtypes (a checkpoint's integer buffers):
 * opened, their sizes checked, and refused only when read as a param. */
START_TEST(test_st_other_dtypes) {
  make_tmpdir("rtio");
  const char *p = tmp_path("mixed.safetensors");
  uint8_t data[16] = {0};
  float one = 1.0f;
  memcpy(data, &one, 4);
  write_st_raw(p,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[4,12]},"
               "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[2,2],\"data_offsets\":[12,16]}}",
               data, sizeof data);
  MplSafetensors st;
  MplErr err = {{0}};
  ck_assert_int_eq(mpl_st_open(&st, p, &err), MPL_OK);
  ck_assert_int_eq(st.n, 3);
  float w = 0;
  ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "w"), &w, &err), MPL_OK);
  ck_assert(w == 1.0f);
  float buf[4];
  ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "ids"), buf, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "'ids' is I64") && strstr(err.msg, "F32, F16 or BF16"), "%s", err.msg);
  mpl_st_free(&st);
  /* a tensor of 9 dims (another tool's): the file opens, the tensor is refused when read */
  write_st_raw(p,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"big9\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[4,8]}}",
               data, 8);
  ck_assert_msg(mpl_st_open(&st, p, &err) == MPL_OK, "%s", err.msg);
  ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "w"), &w, &err), MPL_OK);
  ck_assert_int_eq(mpl_st_find(&st, "big9")->ndim, 9);
  ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "big9"), buf, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "9 dims"), "%s", err.msg);
  mpl_st_free(&st);
  /* 8 dims, the most a param has (pass 115: taken for another tool's): its shape, its size
     checked, its values read; with a wrong span refused */
  float eight[2] = {2.5f, -1.0f};
  write_st_raw(p, "{\"r8\":{\"dtype\":\"F32\",\"shape\":[1,1,2,1,1,1,1,1],\"data_offsets\":[0,8]}}", eight, 8);
  ck_assert_msg(mpl_st_open(&st, p, &err) == MPL_OK, "%s", err.msg);
  const MplStTensor *r8 = mpl_st_find(&st, "r8");
  ck_assert(r8 && r8->ndim == 8 && r8->numel == 2 && r8->shape[2] == 2 && r8->shape[7] == 1);
  ck_assert_int_eq(mpl_st_read_f32(&st, r8, buf, &err), MPL_OK);
  ck_assert(buf[0] == 2.5f && buf[1] == -1.0f);
  mpl_st_free(&st);
  expect_st_error("{\"r8\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],\"data_offsets\":[0,8]}}", 8,
                  "span 8 bytes but shape and dtype need 4");
  /* fields another writer adds to an entry are ignored, up to 16 fields in all (pass 115:
     S15, one extra field refused, and S16, a repeated one accepted, passed this file); a
     17th field, or one given twice, is refused */
  char hdr[1024];
  int at = snprintf(hdr, sizeof hdr, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]");
  for (int f = 0; f < 13; f++) at += snprintf(hdr + at, sizeof hdr - (size_t)at, ",\"note%d\":\"%d\"", f, f);
  snprintf(hdr + at, sizeof hdr - (size_t)at, "}}");
  write_st_raw(p, hdr, eight, 8);
  ck_assert_msg(mpl_st_open(&st, p, &err) == MPL_OK, "%s", err.msg);
  ck_assert_int_eq(mpl_st_read_f32(&st, mpl_st_find(&st, "x"), buf, &err), MPL_OK);
  ck_assert(buf[0] == 2.5f && buf[1] == -1.0f);
  mpl_st_free(&st);
  snprintf(hdr + at, sizeof hdr - (size_t)at, ",\"note13\":0}}");
  expect_st_error(hdr, 8, "17 fields in its entry");
  expect_st_error("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"note\":1,\"note\":2}}", 8,
                  "\"note\" is given twice");
  /* a header over 100 MB (sparse: no disk used) is refused before it is read (S17: without
     the cap it was read and parsed whole) */
  {
    FILE *f = fopen(p, "wb");
    ck_assert(f != NULL);
    uint64_t hl = (uint64_t)MPL_ST_MAX_HEADER + 1;
    uint8_t lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (uint8_t)(hl >> (8 * i));
    ck_assert(fwrite(lb, 1, 8, f) == 8 && ftruncate(fileno(f), (off_t)(8 + hl + 8)) == 0 && fclose(f) == 0);
    ck_assert_int_eq(mpl_st_open(&st, p, &err), MPL_ERR);
    char want[96];
    snprintf(want, sizeof want, "header of %llu bytes is too large", (unsigned long long)hl);
    ck_assert_msg(strstr(err.msg, want) != NULL, "%s", err.msg);
  }
  remove_tmpdir();
}
END_TEST

/* Every truncation and every header byte flip of a valid file: refused or read safely. */
START_TEST(test_st_fuzz) {
  make_tmpdir("rtio");
  float w[6] = {1, 2, 3, 4, 5, 6};
  int64_t ws[2] = {2, 3}, bs[1] = {2};
  MplStEntry e[] = {{.name = "w", .ndim = 2, .shape = ws, .data = w}, {.name = "b", .ndim = 1, .shape = bs, .data = w}};
  const char *p = tmp_path("ok.safetensors"), *q = tmp_path("fz.safetensors");
  MplErr err;
  ck_assert_int_eq(mpl_st_write_f32(p, e, 2, NULL, NULL, 0, &err), MPL_OK);
  uint8_t *b;
  size_t len;
  ck_assert_int_eq(mpl_file_read_all(p, &b, &len, &err), MPL_OK);
  MplAllocStats before, after;
  mpl_alloc_stats(&before);
  for (size_t n = 0; n < len; n++) {
    write_bytes(q, b, n);
    MplSafetensors st;
    ck_assert_msg(mpl_st_open(&st, q, &err) == MPL_ERR, "truncation at %zu accepted", n);
  }
  for (size_t i = 0; i < len - 32; i++) {
    uint8_t *c = malloc(len);
    memcpy(c, b, len);
    c[i] ^= (uint8_t)(1 + i % 255);
    write_bytes(q, c, len);
    free(c);
    MplSafetensors st;
    if (mpl_st_open(&st, q, &err) == MPL_OK) {
      float out[64];
      for (int k = 0; k < st.n; k++)
        if (st.tensors[k].numel <= 64) ck_assert_int_eq(mpl_st_read_f32(&st, &st.tensors[k], out, &err), MPL_OK);
      mpl_st_free(&st);
    } else {
      ck_assert(strlen(err.msg) > 0);
    }
  }
  mpl_alloc_stats(&after);
  ck_assert_int_eq(after.live_blocks, before.live_blocks);
  mpl_free(b);
  remove_tmpdir();
}
END_TEST

/* Allocation failure at every point of open: an error, never a crash or a leak. */
START_TEST(test_st_alloc_failure) {
  make_tmpdir("rtio");
  float w[4] = {1, 2, 3, 4};
  int64_t ws[1] = {4};
  MplStEntry e[] = {{.name = "w", .ndim = 1, .shape = ws, .data = w}, {.name = "v", .ndim = 1, .shape = ws, .data = w}};
  const char *mk[] = {"a"}, *mv[] = {"b"};
  const char *p = tmp_path("a.safetensors");
  MplErr err;
  ck_assert_int_eq(mpl_st_write_f32(p, e, 2, mk, mv, 1, &err), MPL_OK);
  MplAllocStats before, after;
  mpl_alloc_stats(&before);
  int failures = 0;
  for (int nth = 1; nth < 200; nth++) {
    mpl_alloc_fail_nth(nth);
    MplSafetensors st;
    int rc = mpl_st_open(&st, p, &err);
    mpl_alloc_fail_nth(0);
    if (rc == MPL_OK) {
      mpl_st_free(&st);
      break;
    }
    failures++;
    ck_assert_msg(strstr(err.msg, "out of memory") != NULL, "nth %d: %s", nth, err.msg);
  }
  ck_assert_int_gt(failures, 3);
  for (int nth = 1; nth < 50; nth++) { /* the writer too */
    mpl_alloc_fail_nth(nth);
    int rc = mpl_st_write_f32(p, e, 2, mk, mv, 1, &err);
    mpl_alloc_fail_nth(0);
    if (rc == MPL_OK) break;
  }
  mpl_alloc_stats(&after);
  ck_assert_int_eq(after.live_blocks, before.live_blocks);
  remove_tmpdir();
}
END_TEST

/* ---- token files and the loader ---------------------------------------------------- */

static void write_tokens(const char *path, int64_t n) {
  uint16_t *t = malloc((size_t)n * 2 + 2);
  for (int64_t i = 0; i < n; i++) t[i] = (uint16_t)(i % 1000);
  MplErr err;
  ck_assert_msg(mpl_tokens_write(path, t, n, &err) == MPL_OK, "%s", err.msg);
  free(t);
}

static void expect_tok_error(const char *path, const char *needle) {
  MplTokens t;
  MplErr err;
  ck_assert_int_eq(mpl_tokens_open(&t, path, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

START_TEST(test_tokens_errors) {
  make_tmpdir("rtio");
  expect_tok_error(tmp_path("none.bin"), "cannot open");
  write_bytes(tmp_path("short.bin"), "12345678", 8);
  expect_tok_error(tmp_path("short.bin"), "too short");
  int32_t h[256] = {123, 1, 4};
  uint8_t buf[1024 + 8];
  memcpy(buf, h, 1024);
  write_bytes(tmp_path("magic.bin"), buf, 1024 + 8);
  expect_tok_error(tmp_path("magic.bin"), "bad magic 123");
  h[0] = 20240520, h[1] = 2;
  memcpy(buf, h, 1024);
  write_bytes(tmp_path("ver.bin"), buf, 1024 + 8);
  expect_tok_error(tmp_path("ver.bin"), "unsupported version 2");
  h[1] = 1, h[2] = 5;
  memcpy(buf, h, 1024);
  write_bytes(tmp_path("trunc.bin"), buf, 1024 + 8);
  expect_tok_error(tmp_path("trunc.bin"), "truncated");
  h[2] = 3;
  memcpy(buf, h, 1024);
  write_bytes(tmp_path("long.bin"), buf, 1024 + 8);
  expect_tok_error(tmp_path("long.bin"), "header says 3 tokens");
  remove_tmpdir();
}
END_TEST

START_TEST(test_loader) {
  make_tmpdir("rtio");
  write_tokens(tmp_path("t.bin"), 20);
  MplTokens t;
  MplErr err;
  ck_assert_int_eq(mpl_tokens_open(&t, tmp_path("t.bin"), &err), MPL_OK);
  ck_assert_int_eq(t.ntok, 20);
  ck_assert_int_eq(t.max_token, 19);
  { /* the largest token where it is first and only there (a scan from the second missed it:
       review pass 95; the range check against the vocabulary reads max_token) */
    uint16_t first[6] = {700, 3, 9, 0, 5, 1};
    MplTokens u;
    ck_assert_msg(mpl_tokens_write(tmp_path("first.bin"), first, 6, &err) == MPL_OK, "%s", err.msg);
    ck_assert_int_eq(mpl_tokens_open(&u, tmp_path("first.bin"), &err), MPL_OK);
    ck_assert_int_eq(u.max_token, 700);
    mpl_tokens_free(&u);
  }
  MplLoader l;
  ck_assert_int_eq(mpl_loader_init(&l, &t, 4, 5, &err), MPL_ERR); /* 21 tokens needed */
  ck_assert(strstr(err.msg, "too few") != NULL);
  ck_assert_int_eq(mpl_loader_init(&l, &t, 2, 3, &err), MPL_OK);
  /* batch*seq = 6; 19 / 6 = 3 batches per pass: positions 0, 6, 12, then back to 0 */
  int64_t want[] = {0, 6, 12, 0, 6, 12, 0};
  for (int s = 0; s < 7; s++) {
    ck_assert_int_eq(mpl_loader_tell(&l), want[s]);
    ck_assert_int_eq(mpl_loader_pos_at_step(&l, s), want[s]);
    int32_t idx[6], tgt[6];
    mpl_loader_rows(&l, 0, 2, idx, tgt);
    for (int i = 0; i < 6; i++) {
      ck_assert_int_eq(idx[i], want[s] + i);
      ck_assert_int_eq(tgt[i], want[s] + i + 1);
    }
    int32_t row1[3];
    mpl_loader_rows(&l, 1, 1, NULL, row1); /* micro-batch 1 of size 1 */
    ck_assert_int_eq(row1[0], want[s] + 4);
    mpl_loader_advance(&l);
  }
  /* restore: seek to a step's position, or refuse a bad one */
  ck_assert_int_eq(mpl_loader_seek(&l, mpl_loader_pos_at_step(&l, 1001), 0, &err), MPL_OK);
  ck_assert_int_eq(mpl_loader_tell(&l), 1001 % 3 * 6);
  ck_assert_int_eq(mpl_loader_seek(&l, 7, 0, &err), MPL_ERR);
  ck_assert_int_eq(mpl_loader_seek(&l, 18, 0, &err), MPL_ERR);
  /* the file's last token (19 of 20) is no batch start whatever the alignment: nothing
     after it is a target (pass 115: taken with another alignment, the run restarted at 0) */
  ck_assert_int_eq(mpl_loader_seek(&l, 19, 19, &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "loader position 19 is not a batch start"), "%s", err.msg);
  /* a resume with another batch*seq (the checkpoint's 4, this run's 6): from 8 a batch
     needs tokens 8..14, which 15 hold exactly, so it stays; 14 do not, so it wraps to 0
     (pass 115: a wrap one token early passed every other test) */
  for (int ntok = 14; ntok <= 15; ntok++) {
    MplTokens v;
    write_tokens(tmp_path("r.bin"), ntok);
    ck_assert_int_eq(mpl_tokens_open(&v, tmp_path("r.bin"), &err), MPL_OK);
    ck_assert_int_eq(mpl_loader_init(&l, &v, 1, 6, &err), MPL_OK);
    ck_assert_msg(mpl_loader_seek(&l, 8, 4, &err) == MPL_OK, "%s", err.msg);
    ck_assert_int_eq(mpl_loader_tell(&l), (ntok == 15 ? 8 : 0));
    int32_t row[6];
    mpl_loader_rows(&l, 0, 1, NULL, row);
    ck_assert_int_eq(row[5], (ntok == 15 ? 14 : 6));
    mpl_tokens_free(&v);
  }
  /* an exact fit: 13 tokens, batch*seq 6 -> 2 batches */
  write_tokens(tmp_path("u.bin"), 13);
  MplTokens u;
  ck_assert_int_eq(mpl_tokens_open(&u, tmp_path("u.bin"), &err), MPL_OK);
  ck_assert_int_eq(mpl_loader_init(&l, &u, 1, 6, &err), MPL_OK);
  mpl_loader_advance(&l);
  ck_assert_int_eq(mpl_loader_tell(&l), 6);
  mpl_loader_advance(&l);
  ck_assert_int_eq(mpl_loader_tell(&l), 0);
  mpl_tokens_free(&u);
  /* token counts a multiple of batch*seq (12, 18 for 6): a batch reads bt + 1 tokens, so the
     last bt never starts one (pass 82: a wrap test one token short passed every other test) */
  for (int ntok = 12; ntok <= 18; ntok += 6) {
    write_tokens(tmp_path("m.bin"), ntok);
    ck_assert_int_eq(mpl_tokens_open(&u, tmp_path("m.bin"), &err), MPL_OK);
    ck_assert_int_eq(mpl_loader_init(&l, &u, 1, 6, &err), MPL_OK);
    for (int s = 0; s < 10; s++) {
      ck_assert_int_eq(mpl_loader_tell(&l), mpl_loader_pos_at_step(&l, s));
      ck_assert_int_eq(mpl_loader_tell(&l), s % (ntok / 6 - 1) * 6);
      ck_assert(mpl_loader_tell(&l) + 6 + 1 <= ntok);
      mpl_loader_advance(&l);
    }
    mpl_tokens_free(&u);
  }
  mpl_tokens_free(&t);
  /* a 4 MiB file is mapped, not copied: opening it allocates its name, not its tokens */
  write_tokens(tmp_path("big.bin"), 2 << 20);
  MplAllocStats before, after;
  mpl_alloc_stats(&before);
  ck_assert_int_eq(mpl_tokens_open(&u, tmp_path("big.bin"), &err), MPL_OK);
  mpl_alloc_stats(&after);
  ck_assert_msg(after.live_bytes - before.live_bytes < 4096, "%lld bytes allocated",
                (long long)(after.live_bytes - before.live_bytes));
  ck_assert(u.ntok == 2 << 20 && u.max_token == 999 && u.tokens[1234567] == 1234567 % 1000);
  mpl_tokens_free(&u);
  ck_assert(u.tokens == NULL && u.map == NULL);
  expect_tok_error(tmpdir, "not a regular file");
  remove_tmpdir();
}
END_TEST

START_TEST(test_synthetic) {
  MplSynthInput in[2] = {{MPL_SYNTH_F32, 3, 0}, {MPL_SYNTH_I32, 4, 7}};
  MplSynth a, b, c;
  MplErr err;
  ck_assert_int_eq(mpl_synth_init(&a, 5, in, 2, 42, &err), MPL_OK);
  ck_assert_int_eq(mpl_synth_init(&b, 5, in, 2, 42, &err), MPL_OK);
  ck_assert_int_eq(mpl_synth_init(&c, 5, in, 2, 43, &err), MPL_OK);
  ck_assert_int_eq(memcmp(a.data[0], b.data[0], 5 * 3 * 4), 0);
  ck_assert_int_eq(memcmp(a.data[1], b.data[1], 5 * 4 * 4), 0);
  ck_assert_int_ne(memcmp(a.data[0], c.data[0], 5 * 3 * 4), 0);
  const int32_t *iv = a.data[1];
  int seen[7] = {0};
  for (int i = 0; i < 20; i++) {
    ck_assert(iv[i] >= 0 && iv[i] < 7);
    seen[iv[i]]++;
  }
  { /* integers in [0, hi): every value drawn, the last too (review pass 95: floor(u (hi - 1))
       never drew hi - 1), the mean near (hi - 1) / 2 */
    MplSynthInput two[2] = {{MPL_SYNTH_I32, 1000, 2}, {MPL_SYNTH_I32, 1000, 10}};
    MplSynth d;
    ck_assert_int_eq(mpl_synth_init(&d, 1, two, 2, 9, &err), MPL_OK);
    const int32_t *b2 = d.data[0], *b10 = d.data[1];
    int ones = 0, hits[10] = {0};
    double mean = 0;
    for (int i = 0; i < 1000; i++) {
      ck_assert(b2[i] == 0 || b2[i] == 1);
      ck_assert(b10[i] >= 0 && b10[i] < 10);
      ones += b2[i], hits[b10[i]]++, mean += b10[i] / 1000.0;
    }
    ck_assert_msg(ones > 400 && ones < 600, "%d ones of 1000 draws of {0, 1}", ones);
    for (int k = 0; k < 10; k++) ck_assert_msg(hits[k] > 50, "%d drawn %d times of 1000", k, hits[k]);
    ck_assert_msg(fabs(mean - 4.5) < 0.4, "the mean of 1000 draws in [0, 10): %g", mean);
    mpl_synth_free(&d);
  }
  double sum = 0;
  const float *fv = a.data[0];
  for (int i = 0; i < 15; i++) sum += fabs(fv[i]);
  ck_assert(sum > 1 && sum < 60);
  /* step 3 with 4 rows per step: rows 2..3 are examples (12+2) % 5 = 4 and 0 */
  float f[2 * 3];
  mpl_synth_rows(&a, 0, 3, 4, 2, 2, f);
  ck_assert_int_eq(memcmp(f, fv + 4 * 3, 12), 0);
  ck_assert_int_eq(memcmp(f + 3, fv, 12), 0);
  int32_t r[4];
  mpl_synth_rows(&a, 1, 1, 4, 0, 1, r); /* example 4 */
  ck_assert_int_eq(memcmp(r, iv + 16, 16), 0);
  MplSynthInput badin = {MPL_SYNTH_I32, 1, 0};
  mpl_synth_free(&b);
  ck_assert_int_eq(mpl_synth_init(&b, 5, &badin, 1, 1, &err), MPL_ERR);
  mpl_synth_free(&a);
  mpl_synth_free(&c);
}
END_TEST

/* ---- the job file ------------------------------------------------------------------- */

enum { TAG_META = MPL_JOB_TAG('M', 'E', 'T', 'A'), TAG_OPS = MPL_JOB_TAG('O', 'P', 'S', ' ') };

static void build_job(MplJobWriter *w) {
  mpl_jw_init(w);
  mpl_jw_begin(w, TAG_META);
  mpl_jw_str(w, "gpt-tiny");
  mpl_jw_u32(w, 4);
  mpl_jw_f64(w, 0.125);
  mpl_jw_i64(w, -5);
  mpl_jw_end(w);
  mpl_jw_begin(w, TAG_OPS);
  mpl_jw_u32(w, 3); /* count, then (name, u64, u8) records */
  for (int i = 0; i < 3; i++) {
    char name[16];
    snprintf(name, sizeof name, "op%d", i);
    mpl_jw_str(w, name);
    mpl_jw_u64(w, 1000u + (unsigned)i);
    mpl_jw_u8(w, (uint8_t)i);
  }
  mpl_jw_end(w);
  mpl_jw_begin(w, MPL_JOB_TAG('B', 'L', 'O', 'B'));
  mpl_jw_bytes(w, "abc", 3);
  mpl_jw_end(w);
}

/* A parser on top of the container, as the job loader will be: returns 0 if it read all. */
static int parse_job(const MplJob *job, MplErr *err) {
  MplCursor c;
  mpl_cur_init(&c, mpl_job_section(job, TAG_META));
  const char *name = mpl_cur_str(&c);
  uint32_t k = mpl_cur_u32(&c);
  double d = mpl_cur_f64(&c);
  int64_t i = mpl_cur_i64(&c);
  if (c.failed) return *err = c.err, -1;
  if (!mpl_cur_at_end(&c)) return mpl_errf(err, "META: trailing bytes");
  (void)name, (void)k, (void)d, (void)i;
  mpl_cur_init(&c, mpl_job_section(job, TAG_OPS));
  uint32_t n = mpl_cur_count(&c, 1000, 14, "op");
  uint64_t sum = 0;
  for (uint32_t j = 0; j < n && !c.failed; j++) {
    const char *s = mpl_cur_str(&c);
    sum += mpl_cur_u64(&c) + mpl_cur_u8(&c) + (s ? strlen(s) : 0);
  }
  if (c.failed) return *err = c.err, -1;
  return sum > 0 ? 0 : -1;
}

START_TEST(test_job_roundtrip) {
  make_tmpdir("rtio");
  MplJobWriter w;
  build_job(&w);
  MplErr err;
  const char *p = tmp_path("job");
  ck_assert_int_eq(mpl_jw_save(&w, p, 5, &err), MPL_OK);
  MplJob job;
  ck_assert_msg(mpl_job_load(&job, p, &err) == MPL_OK, "%s", err.msg);
  ck_assert_int_eq(job.nsections, 3);
  ck_assert_int_eq(job.flags, 5);
  MplCursor c;
  mpl_cur_init(&c, mpl_job_section(&job, TAG_META));
  ck_assert_str_eq(mpl_cur_str(&c), "gpt-tiny");
  ck_assert_int_eq(mpl_cur_u32(&c), 4);
  ck_assert(mpl_cur_f64(&c) == 0.125);
  ck_assert_int_eq(mpl_cur_i64(&c), -5);
  ck_assert(mpl_cur_at_end(&c));
  ck_assert_int_eq(mpl_cur_u32(&c), 0); /* past the end: an error, not a crash */
  ck_assert(c.failed);
  ck_assert_msg(strstr(c.err.msg, "META") && strstr(c.err.msg, "truncated"), "%s", c.err.msg);
  ck_assert_int_eq(parse_job(&job, &err), 0);
  const MplJobSection *blob = mpl_job_section(&job, MPL_JOB_TAG('B', 'L', 'O', 'B'));
  ck_assert_int_eq(blob->len, 3);
  ck_assert_int_eq(memcmp(blob->data, "abc", 3), 0);
  ck_assert_ptr_null(mpl_job_section(&job, MPL_JOB_TAG('N', 'O', 'N', 'E')));
  mpl_cur_init(&c, NULL);
  ck_assert(c.failed);
  mpl_job_free(&job);
  /* a wrong version says which it found and which it wants */
  w.buf[8] = 7;
  ck_assert_int_eq(mpl_job_parse(&job, w.buf, w.len, "job", &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "version 7") && strstr(err.msg, "version 2"), "%s", err.msg);
  w.buf[8] = MPL_JOB_VERSION;
  w.buf[w.len - 9] ^= 1;
  ck_assert_int_eq(mpl_job_parse(&job, w.buf, w.len, "job", &err), MPL_ERR);
  ck_assert_msg(strstr(err.msg, "corrupted"), "%s", err.msg);
  mpl_jw_free(&w);
  /* writer misuse is reported */
  mpl_jw_init(&w);
  mpl_jw_begin(&w, TAG_META);
  ck_assert_int_eq(mpl_jw_finish(&w, 0, &err), MPL_ERR);
  ck_assert(strstr(err.msg, "open"));
  mpl_jw_free(&w);
  remove_tmpdir();
}
END_TEST

/* Fixes the size and checksum so a corrupted body reaches the parser on top. */
static void reseal(uint8_t *b, size_t len) {
  for (int i = 0; i < 8; i++) b[16 + i] = (uint8_t)((uint64_t)len >> (8 * i));
  uint64_t h = mpl_fnv1a64(b + MPL_JOB_HEADER, len - MPL_JOB_HEADER);
  for (int i = 0; i < 8; i++) b[24 + i] = (uint8_t)(h >> (8 * i));
}

/* Every single-byte flip and every truncation, both raw (the checksum must refuse them) and
 * resealed (the framing and the cursors must refuse them or parse them safely). */
START_TEST(test_job_fuzz) {
  MplJobWriter w;
  build_job(&w);
  MplErr err;
  ck_assert_int_eq(mpl_jw_finish(&w, 0, &err), MPL_OK);
  size_t len = w.len;
  uint8_t *c = malloc(len);
  MplAllocStats before, after;
  mpl_alloc_stats(&before);
  int parsed = 0, refused_by_parser = 0;
  for (size_t i = 0; i < len; i++)
    for (int v = 0; v < 3; v++) {
      memcpy(c, w.buf, len);
      c[i] ^= (uint8_t)(v == 0 ? 0x01 : v == 1 ? 0x80 : 0xFF);
      MplJob job;
      if (i < 12 || i >= 16) /* all but the flags: the size and checksum fields are checked too */
        ck_assert_msg(mpl_job_parse(&job, c, len, "job", &err) == MPL_ERR, "flip at %zu accepted", i);
      else if (mpl_job_parse(&job, c, len, "job", &err) == MPL_OK) mpl_job_free(&job);
      if (i < MPL_JOB_HEADER) continue;
      reseal(c, len);
      if (mpl_job_parse(&job, c, len, "job", &err) == MPL_OK) {
        parsed++;
        if (parse_job(&job, &err) != 0) refused_by_parser++, ck_assert(strlen(err.msg) > 0);
        mpl_job_free(&job);
      } else {
        ck_assert(strlen(err.msg) > 0);
      }
    }
  for (size_t n = 0; n < len; n++) {
    MplJob job;
    ck_assert_msg(mpl_job_parse(&job, w.buf, n, "job", &err) == MPL_ERR, "truncation at %zu accepted", n);
    memcpy(c, w.buf, n);
    if (n < MPL_JOB_HEADER) continue;
    reseal(c, n);
    if (mpl_job_parse(&job, c, n, "job", &err) == MPL_OK) {
      if (parse_job(&job, &err) != 0) ck_assert(strlen(err.msg) > 0);
      mpl_job_free(&job);
    }
  }
  mpl_alloc_stats(&after);
  ck_assert_int_eq(after.live_blocks, before.live_blocks);
  ck_assert_int_gt(parsed, 10);
  ck_assert_int_gt(refused_by_parser, 1);
  free(c);
  mpl_jw_free(&w);
}
END_TEST

START_TEST(test_job_alloc_failure) {
  MplJobWriter w;
  MplErr err;
  for (int nth = 1; nth < 10; nth++) {
    mpl_alloc_fail_nth(nth);
    build_job(&w);
    int rc = mpl_jw_finish(&w, 0, &err);
    mpl_alloc_fail_nth(0);
    if (rc == MPL_OK) {
      mpl_jw_free(&w);
      break;
    }
    ck_assert(strstr(err.msg, "out of memory"));
    mpl_jw_free(&w);
  }
  build_job(&w);
  ck_assert_int_eq(mpl_jw_finish(&w, 0, &err), MPL_OK);
  for (int nth = 1; nth < 5; nth++) {
    MplJob job;
    mpl_alloc_fail_nth(nth);
    int rc = mpl_job_parse(&job, w.buf, w.len, "job", &err);
    mpl_alloc_fail_nth(0);
    if (rc == MPL_OK) mpl_job_free(&job);
    else ck_assert(strstr(err.msg, "out of memory"));
  }
  mpl_jw_free(&w);
}
END_TEST

/* ---- trace and metrics ---------------------------------------------------------------- */

typedef struct TraceArg {
  MplTrace *t;
  int rank;
} TraceArg;

static void *trace_rank(void *p) {
  TraceArg *a = p;
  for (int i = 0; i < 500; i++) {
    double t0 = mpl_trace_now(a->t);
    char name[32];
    snprintf(name, sizeof name, "fwd(s%d,mb%d)\"\\", a->rank, i);
    mpl_trace_event(a->t, a->rank, name, "compute", t0, mpl_trace_now(a->t) - t0);
  }
  return NULL;
}

/* The profile: written and read back exactly (17 digits); a broken one is refused. */
START_TEST(test_profile) {
  make_tmpdir("rtio");
  MplProfileRank ranks[2] = {{.device = "cpu", .threads = 1, .speed = 1, .gemm_gflops = 41.5, .busy_s = 0.04,
                              .wall_s = 0.05, .compute_s = 0.039, .msg_s = 0.01, .update_s = 0.001,
                              .update_elems = 394752},
                             {.device = "cuda", .threads = 0, .speed = 0.5, .busy_s = 1.0 / 3, .wall_s = 0.5}};
  MplProfileOp ops[2] = {{.key = "0123456789abcdef#0", .label = "tanh at \"m\".mpl:3:5", .rank = 1,
                          .fwd_s = 1e-5 / 3, .bwd_b_s = 2e-5, .bwd_w_s = 0},
                         {.key = "0123456789abcdef#1", .label = "matmul in nn.linear at m.mpl:2:9", .rank = 0,
                          .fwd_s = 0.001}};
  MplProfile p = {.model = "m", .source = "m.mpl", .schedule = "zbv", .dp = 1, .pp = 2, .tp = 1,
                  .microbatches = 8, .steps = 5, .nranks = 2, .ranks = ranks, .nops = 2, .ops = ops};
  MplErr err = {{0}};
  const char *path = tmp_path("p.json");
  ck_assert_int_eq(mpl_profile_write(&p, path, &err), MPL_OK);
  MplProfile q;
  ck_assert_msg(mpl_profile_read(path, &q, &err) == MPL_OK, "%s", err.msg);
  ck_assert_str_eq(q.precision, ""); /* (nor a precision: a profile written before it) */
  ck_assert_str_eq(q.model, "m");
  ck_assert_str_eq(q.schedule, "zbv");
  ck_assert_int_eq(q.pp, 2);
  ck_assert_int_eq(q.steps, 5);
  ck_assert_str_eq(q.ranks[1].device, "cuda");
  ck_assert(q.ranks[1].speed == 0.5 && q.ranks[1].busy_s == 1.0 / 3 && q.ranks[0].gemm_gflops == 41.5);
  ck_assert(q.ranks[0].update_elems == 394752 && q.ranks[1].update_elems == 0);
  ck_assert_str_eq(q.ops[0].label, "tanh at \"m\".mpl:3:5");
  ck_assert(q.ops[0].fwd_s == 1e-5 / 3 && q.ops[0].rank == 1 && q.ops[1].fwd_s == 0.001);
  mpl_profile_free(&q);
  static const char *const bad[][2] = {
      {"[1, 2]", "not a profile"},
      {"{\"format\": \"mpl-profile 9\"}", "profile format"},
      {"{\"format\": \"mpl-profile 1\", \"model\": \"m\"}", "is missing"},
      {"{\"format\": \"mpl-profile 1\", \"model\": \"m\", \"source\": \"s\", \"schedule\": \"1f1b\", "
       "\"mesh\": {\"dp\": 1, \"pp\": 2, \"tp\": 1}, \"microbatches\": 2, \"steps\": 1, \"ranks\": [], "
       "\"ops\": []}", "0 ranks listed for pp = 2"},
      {"{\"format\": \"mpl-profile 1\", \"model\": \"m\", \"source\": \"s\", \"schedule\": \"1f1b\", "
       "\"mesh\": {\"dp\": 1, \"pp\": 1, \"tp\": 1}, \"microbatches\": 2, \"steps\": 1, \"ranks\": [{\"rank\": 0, "
       "\"device\": \"cpu\", \"threads\": 1, \"speed\": 1, \"gemm_gflops\": 0, \"busy_s\": 0, \"wall_s\": 0, "
       "\"compute_s\": 0, \"msg_s\": 0, \"update_s\": 0}], \"ops\": [{\"key\": \"k\", \"label\": \"l\", \"rank\": 0, "
       "\"fwd_s\": -1, \"bwd_b_s\": 0, \"bwd_w_s\": 0}]}", "\"fwd_s\" is -1, not a number from 0 to 1e+06"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_bytes(path, bad[i][0], strlen(bad[i][0]));
    ck_assert_int_eq(mpl_profile_read(path, &q, &err), MPL_ERR);
    ck_assert_msg(strstr(err.msg, bad[i][1]), "case %zu: %s", i, err.msg);
  }
  ck_assert_int_eq(mpl_profile_read(tmp_path("none.json"), &q, &err), MPL_ERR);
  /* a profile written before update_elems: read, with -1 for the counts */
  static const char old[] = "{\"format\": \"mpl-profile 1\", \"model\": \"m\", \"source\": \"s\", \"schedule\": \"1f1b\", "
      "\"mesh\": {\"dp\": 1, \"pp\": 1, \"tp\": 1}, \"microbatches\": 2, \"steps\": 1, \"ranks\": [{\"rank\": 0, "
      "\"device\": \"cpu\", \"threads\": 1, \"speed\": 1, \"gemm_gflops\": 0, \"busy_s\": 0, \"wall_s\": 0, "
      "\"compute_s\": 0, \"msg_s\": 0, \"update_s\": 0}], \"ops\": []}";
  write_bytes(path, old, strlen(old));
  ck_assert_msg(mpl_profile_read(path, &q, &err) == MPL_OK, "%s", err.msg);
  ck_assert(q.ranks[0].update_elems == -1);
  mpl_profile_free(&q);
  remove_tmpdir();
}
END_TEST

START_TEST(test_trace) {
  make_tmpdir("rtio");
  MplTrace t;
  MplErr err;
  ck_assert_int_eq(mpl_trace_init(&t, 3, &err), MPL_OK);
  pthread_t th[3];
  TraceArg args[3];
  for (int r = 0; r < 3; r++) {
    args[r] = (TraceArg){&t, r};
    pthread_create(&th[r], NULL, trace_rank, &args[r]);
  }
  for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
  ck_assert_int_eq(mpl_trace_write(&t, tmp_path("trace.json"), &err), MPL_OK);
  mpl_trace_free(&t);
  uint8_t *b;
  size_t len;
  ck_assert_int_eq(mpl_file_read_all(tmp_path("trace.json"), &b, &len, &err), MPL_OK);
  MplJson v;
  ck_assert_msg(mpl_json_parse((char *)b, len, &v, &err) == MPL_OK, "%s", err.msg);
  ck_assert_int_eq(v.type, MPL_JSON_ARR);
  ck_assert_int_eq(v.n, 1 + 3 + 1500);
  ck_assert_str_eq(mpl_json_get(mpl_json_get(&v.items[2], "args"), "name")->str, "rank 1");
  const MplJson *e = &v.items[4 + 500];
  ck_assert_str_eq(mpl_json_get(e, "ph")->str, "X");
  ck_assert_int_eq(mpl_json_get(e, "tid")->i, 1);
  ck_assert_str_eq(mpl_json_get(e, "name")->str, "fwd(s1,mb0)\"\\");
  ck_assert(mpl_json_get(e, "dur")->num >= 0);
  double prev = -1;
  for (int i = 4; i < 4 + 500; i++) { /* monotonic within a rank */
    double ts = mpl_json_get(&v.items[i], "ts")->num;
    ck_assert(ts >= prev);
    prev = ts;
  }
  mpl_json_free(&v);
  mpl_free(b);
  MplMetrics m;
  ck_assert_int_eq(mpl_metrics_open(&m, tmp_path("m.jsonl"), 0, &err), MPL_OK);
  const char *keys[] = {"step", "loss", "lr", "tokens_per_s", "ms"};
  double v1[] = {1, 4.25, 1e-3, 12345.5, NAN};
  ck_assert_int_eq(mpl_metrics_line(&m, keys, v1, 5, &err), MPL_OK);
  ck_assert_int_eq(mpl_metrics_line(&m, keys, v1, 2, &err), MPL_OK);
  ck_assert_int_eq(mpl_file_read_all(tmp_path("m.jsonl"), &b, &len, &err), MPL_OK); /* flushed */
  char *nl = strchr((char *)b, '\n');
  ck_assert_ptr_nonnull(nl);
  ck_assert_int_eq(mpl_json_parse((char *)b, (size_t)(nl - (char *)b), &v, &err), MPL_OK);
  ck_assert_int_eq(mpl_json_get(&v, "step")->i, 1);
  ck_assert(mpl_json_get(&v, "lr")->num == 1e-3);
  ck_assert_int_eq(mpl_json_get(&v, "ms")->type, MPL_JSON_NULL);
  mpl_json_free(&v);
  ck_assert_int_eq(mpl_json_parse(nl + 1, len - (size_t)(nl + 1 - (char *)b), &v, &err), MPL_OK);
  ck_assert_int_eq(v.n, 2);
  mpl_json_free(&v);
  mpl_free(b);
  mpl_metrics_close(&m);
  remove_tmpdir();
}
END_TEST

/* ---- gemm --------------------------------------------------------------------------------- */

static void fill(float *x, int64_t n, uint32_t seed) {
  for (int64_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
  }
}

/* The float64 reference: C = alpha * op(A) op(B) + beta * C. */
static void ref_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, double beta, double *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++)
        s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = alpha * s + (beta != 0 ? beta * C[i * ldc + j] : 0);
    }
}

static void check_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
  int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
  float *A = malloc((size_t)na * 4 + 4), *B = malloc((size_t)nb * 4 + 4), *C = malloc((size_t)nc * 4 + 4);
  double *R = malloc((size_t)nc * 8 + 8);
  fill(A, na, 1), fill(B, nb, 2), fill(C, nc, 3);
  for (int64_t i = 0; i < nc; i++) R[i] = C[i];
  if (beta == 0)
    for (int64_t i = 0; i < nc; i++) C[i] = NAN; /* beta 0 must ignore C */
  ck_assert_int_eq(mpl_gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), MPL_OK);
  ref_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double d = fabs(C[i * ldc + j] - R[i * ldc + j]);
      ck_assert_msg(d <= 1e-5 * (double)K + 1e-5, "ta %d tb %d %lldx%lldx%lld at (%lld,%lld): %g vs %g", ta, tb,
                    (long long)M, (long long)N, (long long)K, (long long)i, (long long)j, C[i * ldc + j],
                    R[i * ldc + j]);
    }
  free(A), free(B), free(C), free(R);
}

/* A very long K (gemm_ksplit: chunks' products summed in order) against float64, relative
 * to the largest element, on a weight gradient's operands: op(A) = tanh(u + 1) and op(B) a
 * softmax's gradient (1/16 everywhere, less 1 at one class a row), whose sums cancel. One
 * accumulator an element over K = 2^20 was 4.1e-4 off (oneDNN's gemv); chunks of 16384,
 * 8.5e-6. The slices of every transposition, padded strides, alpha and beta are checked
 * too (and were, once, with row blocks of C of a few rows). */
static void check_long_k(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  int64_t lda = (ta ? M : K) + (ta ? 0 : 3), ldb = (tb ? K : N) + 1, ldc = N + 2;
  int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
  float *A = calloc((size_t)na, 4), *B = calloc((size_t)nb, 4), *C = malloc((size_t)nc * 4);
  double *R = malloc((size_t)nc * 8), most = 0;
  uint32_t seed = 11;
  for (int64_t k = 0; k < K; k++) {
    for (int64_t i = 0; i < M; i++) {
      seed = seed * 1664525u + 1013904223u;
      A[ta ? k * lda + i : i * lda + k] = (float)tanh(((seed >> 8) % 2001) / 1000.0);
    }
    seed = seed * 1664525u + 1013904223u;
    int64_t y = (seed >> 8) % N;
    for (int64_t n = 0; n < N; n++) B[tb ? n * ldb + k : k * ldb + n] = (n == y ? -1.0f : 0.0f) + 1.0f / 16;
  }
  fill(C, nc, 13);
  for (int64_t i = 0; i < nc; i++) R[i] = C[i];
  ck_assert_int_eq(mpl_gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), MPL_OK);
  ref_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) most = fmax(most, fabs(R[i * ldc + j]));
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double d = fabs(C[i * ldc + j] - R[i * ldc + j]);
      ck_assert_msg(d <= 3e-5 * most, "ta %d tb %d %lldx%lldx%lld at (%lld,%lld): %.9g vs %.9g (%.2g of the largest)", ta,
                    tb, (long long)M, (long long)N, (long long)K, (long long)i, (long long)j, C[i * ldc + j],
                    R[i * ldc + j], d / most);
    }
  free(A), free(B), free(C), free(R);
}

/* The same through the bf16 entry (bf16 units on a CPU that has them, which sum a product's
 * whole K in one chain: a long K goes to the f32 product, exact on bf16 values, and is cut):
 * bf16 operands, K = 2^20; B is 1/64 less 1 at one class a row, so the float64 reference
 * is a sum and a gathered sum of A's columns. */
static void check_long_k_bf16(void) {
  enum { M = 96, N = 96 }; /* (large enough for bf16 units to pay: bf16_pays) */
  int64_t K = 1 << 20;
  float *A = malloc(sizeof(float) * (size_t)(K * M)), *B = malloc(sizeof(float) * (size_t)(K * N)), *C = malloc(sizeof(float) * M * N);
  double *R = calloc(M * N, sizeof(double)), sum[M] = {0}, most = 0, worst = 0;
  uint32_t seed = 5;
  for (int64_t k = 0; k < K; k++) {
    seed = seed * 1664525u + 1013904223u;
    int64_t y = (seed >> 8) % N;
    for (int64_t i = 0; i < M; i++) { /* A stored [K, M] (ta): values in [-0.5, 1.5) with 8 significant bits */
      seed = seed * 1664525u + 1013904223u;
      float v = (float)((seed >> 8) % 256) / 128.0f - 0.5f;
      A[k * M + i] = v;
      R[i * N + y] -= v; /* (the 1/64 of every column's sum added below) */
      sum[i] += v;
    }
    for (int64_t n = 0; n < N; n++) B[k * N + n] = (n == y ? -1.0f : 0.0f) + 1.0f / 64;
  }
  for (int64_t i = 0; i < M; i++)
    for (int64_t n = 0; n < N; n++) R[i * N + n] += sum[i] / 64.0;
  MplGemmBf16 w;
  mpl_gemm_bf16_init(&w);
  ck_assert_int_eq(mpl_gemm_bf16_batched(&w, true, false, M, N, K, 1.0f, A, M, 0, B, N, 0, 0.0f, C, N, 0, 1), MPL_OK);
  long units = (long)w.units;
  mpl_gemm_bf16_free(&w);
  for (int64_t e = 0; e < M * N; e++) most = fmax(most, fabs(R[e]));
  for (int64_t e = 0; e < M * N; e++) worst = fmax(worst, fabs(C[e] - R[e]) / most);
  /* (bf16 units summing the whole K: 1.7e-5 on this data) */
  ck_assert_msg(worst <= 5e-6, "bf16 entry, K = 2^20: %.2g of the largest (%ld products on bf16 units)", worst, units);
  free(A), free(B), free(C), free(R);
}

START_TEST(test_gemm_long_k) {
  mpl_gemm_set_threads(1);
  check_long_k_bf16();
  check_long_k(true, false, 1, 16, 1 << 20, 1.0f, 0.0f); /* x^T dy: a weight gradient of a million rows */
  check_long_k(false, true, 3, 20, 3 * 16384 + 77, 0.5f, 1.0f);
  check_long_k(true, true, 5, 3, 2 * 16384, 1.0f, 0.0f);
  check_long_k(false, false, 2, 40, 5 * 16384 + 1, 2.0f, 0.5f);
}
END_TEST

START_TEST(test_gemm) {
  mpl_gemm_set_threads(1);
  int64_t sizes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 64, 64}, {129, 31, 200}, {5, 300, 1}};
  for (int t = 0; t < 4; t++)
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
      check_gemm(t & 1, t >> 1, sizes[s][0], sizes[s][1], sizes[s][2], 1.0f, 0.0f);
      check_gemm(t & 1, t >> 1, sizes[s][0], sizes[s][1], sizes[s][2], 0.5f, 1.0f);
    }
  float x = 1;
  ck_assert_int_eq(mpl_gemm_f32(false, false, 2, 2, 2, 1, &x, 1, &x, 2, 0, &x, 2), MPL_ERR); /* lda < K */
  ck_assert_int_eq(mpl_gemm_f32(false, false, 0, 2, 2, 1, &x, 2, &x, 2, 0, &x, 2), MPL_OK);
}
END_TEST

START_TEST(test_gemm_batched_and_determinism) {
  enum { BATCH = 3, M = 37, N = 29, K = 41 };
  float A[BATCH * M * K], B[K * N], C[BATCH * M * N], C2[BATCH * M * N];
  fill(A, BATCH * M * K, 5), fill(B, K * N, 6);
  /* B broadcast over the batch (stride 0) */
  ck_assert_int_eq(mpl_gemm_f32_batched(false, false, M, N, K, 1, A, K, M * K, B, N, 0, 0, C, N, M * N, BATCH), MPL_OK);
  double R[M * N];
  for (int b = 0; b < BATCH; b++) {
    ref_gemm(false, false, M, N, K, 1, A + b * M * K, K, B, N, 0, R, N);
    for (int i = 0; i < M * N; i++) ck_assert(fabs(C[b * M * N + i] - R[i]) < 1e-4);
  }
  ck_assert_int_eq(mpl_gemm_f32_batched(false, false, M, N, K, 1, A, K, M * K, B, N, 0, 0, C, N, 0, BATCH), MPL_ERR);
  /* the same call twice (and on 2 threads) gives the same bits */
  enum { S = 256 };
  float *X = malloc(S * S * 4), *Y = malloc(S * S * 4), *Z1 = malloc(S * S * 4), *Z2 = malloc(S * S * 4);
  fill(X, S * S, 7), fill(Y, S * S, 8);
  for (int threads = 1; threads <= 2; threads++) {
    mpl_gemm_set_threads(threads);
    ck_assert_int_eq(mpl_gemm_f32(false, true, S, S, S, 1, X, S, Y, S, 0, Z1, S), MPL_OK);
    ck_assert_int_eq(mpl_gemm_f32(false, true, S, S, S, 1, X, S, Y, S, 0, Z2, S), MPL_OK);
    ck_assert_int_eq(memcmp(Z1, Z2, S * S * 4), 0);
  }
  mpl_gemm_f32_batched(false, false, M, N, K, 1, A, K, M * K, B, N, 0, 0, C2, N, M * N, BATCH);
  mpl_gemm_set_threads(1);
  mpl_gemm_f32_batched(false, false, M, N, K, 1, A, K, M * K, B, N, 0, 0, C, N, M * N, BATCH);
  ck_assert_int_eq(memcmp(C, C2, sizeof C), 0);
  free(X), free(Y), free(Z1), free(Z2);
}
END_TEST

/* mpl_gemm_set_threads is per calling thread: two rank threads keep their own counts. */
typedef struct ThreadsArg {
  int set, got;
  pthread_barrier_t *bar;
} ThreadsArg;

static void *threads_rank(void *p) {
  ThreadsArg *a = p;
  int (*get)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
  mpl_gemm_set_threads(a->set);
  pthread_barrier_wait(a->bar); /* both have set their count before either reads it */
  float x[4] = {1, 2, 3, 4}, y[4];
  mpl_gemm_f32(false, false, 2, 2, 2, 1, x, 2, x, 2, 0, y, 2);
  a->got = get ? get() : a->set;
  return NULL;
}

START_TEST(test_gemm_threads_per_thread) {
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, 2);
  ThreadsArg a[2] = {{1, 0, &bar}, {3, 0, &bar}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, threads_rank, &a[i]);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&bar);
  ck_assert_int_eq(a[0].got, 1);
  ck_assert_int_eq(a[1].got, 3);
}
END_TEST

static Suite *rtio_suite(void) {
  Suite *s = suite_create("rtio");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_alloc_counts);
  tcase_add_test(tc, test_json);
  tcase_add_test(tc, test_st_roundtrip);
  tcase_add_test(tc, test_st_half);
  tcase_add_test(tc, test_st_errors);
  tcase_add_test(tc, test_st_other_dtypes);
  tcase_add_test(tc, test_st_fuzz);
  tcase_add_test(tc, test_st_alloc_failure);
  tcase_add_test(tc, test_tokens_errors);
  tcase_add_test(tc, test_loader);
  tcase_add_test(tc, test_synthetic);
  tcase_add_test(tc, test_job_roundtrip);
  tcase_add_test(tc, test_job_fuzz);
  tcase_add_test(tc, test_job_alloc_failure);
  tcase_add_test(tc, test_trace);
  tcase_add_test(tc, test_profile);
  tcase_add_test(tc, test_gemm);
  tcase_add_test(tc, test_gemm_long_k);
  tcase_add_test(tc, test_gemm_batched_and_determinism);
  tcase_add_test(tc, test_gemm_threads_per_thread);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(rtio_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
