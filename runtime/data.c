/*
 * data.c — the training data: llm.c token files, the token loader of the train block,
 * and synthetic(n) examples.
 *
 * Invariants:
 *  - an opened token file has the right magic and version and exactly 1024 + 2*count
 *    bytes, so tokens[0 .. ntok) are all real; it is mapped read-only, not copied (a
 *    GPT-2 run's 10^9-token file costs page cache, not 2 GB of the process), so it must
 *    not be truncated while a run reads it;
 *  - the loader's position is always a multiple of batch*seq with pos + batch*seq + 1 <=
 *    ntok, so every read is in range; step k's position is (k mod nb) * batch*seq with
 *    nb = (ntok - 1) / (batch*seq) batches per pass, which is what advancing k times from
 *    0 gives (llm.c's DataLoader, one shard);
 *  - synthetic data is a pure function of (seed, input index, example index), drawn once.
 */
#include "mpl.h"
#include "mpl_rng.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { TOK_HEADER_INTS = 256, TOK_HEADER_BYTES = TOK_HEADER_INTS * 4 };

static int32_t read_i32le(const uint8_t *p) {
  return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static int check_token_header(const char *path, const uint8_t *b, size_t len, MplErr *err) {
  if (len < TOK_HEADER_BYTES)
    return mpl_errf(err, "%s: too short for an llm.c token file (%zu bytes, the header alone is %d)", path, len,
                    TOK_HEADER_BYTES);
  int32_t magic = read_i32le(b), version = read_i32le(b + 4), count = read_i32le(b + 8);
  if (magic != MPL_TOKENS_MAGIC)
    return mpl_errf(err, "%s: bad magic %d (an llm.c token file starts with %d)", path, magic, MPL_TOKENS_MAGIC);
  if (version != MPL_TOKENS_VERSION)
    return mpl_errf(err, "%s: unsupported version %d (expected %d: uint16 tokens)", path, version, MPL_TOKENS_VERSION);
  if (count < 0) return mpl_errf(err, "%s: negative token count %d", path, count);
  size_t want = TOK_HEADER_BYTES + 2 * (size_t)count;
  if (len != want)
    return mpl_errf(err, "%s: the header says %d tokens (%zu bytes) but the file has %zu bytes%s", path, count,
                    want, len, len < want ? " (truncated?)" : "");
  return MPL_OK;
}

int mpl_tokens_open(MplTokens *t, const char *path, MplErr *err) {
  memset(t, 0, sizeof *t);
  int fd = mpl_open_regular(path, err);
  if (fd < 0) return MPL_ERR;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return mpl_errf(err, "%s: cannot stat: %s", path, strerror(errno));
  }
  size_t len = (size_t)st.st_size;
  uint8_t hdr[TOK_HEADER_BYTES];
  ssize_t got = len >= TOK_HEADER_BYTES ? pread(fd, hdr, sizeof hdr, 0) : 0;
  if (len >= TOK_HEADER_BYTES && got != (ssize_t)sizeof hdr) {
    close(fd);
    return mpl_errf(err, "%s: read error: %s", path, got < 0 ? strerror(errno) : "short read");
  }
  if (check_token_header(path, hdr, len, err)) {
    close(fd);
    return MPL_ERR;
  }
  /* mapped, not read: the tokens stay in the page cache (shared by every rank and run,
     given back under memory pressure) instead of a private copy of the whole file */
  void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  int map_errno = errno;
  close(fd);
  if (map == MAP_FAILED) return mpl_errf(err, "%s: cannot map %zu bytes: %s", path, len, strerror(map_errno));
  t->path = mpl_strdup(path);
  if (!t->path) {
    munmap(map, len);
    return mpl_errf(err, "%s: out of memory", path);
  }
  t->map = map, t->map_len = len;
  t->ntok = (int64_t)(len - TOK_HEADER_BYTES) / 2;
  t->tokens = (const uint16_t *)((const uint8_t *)map + TOK_HEADER_BYTES); /* little-endian host */
  t->max_token = -1;
  for (int64_t i = 0; i < t->ntok; i++)
    if (t->tokens[i] > t->max_token) t->max_token = t->tokens[i];
  return MPL_OK;
}

void mpl_tokens_free(MplTokens *t) {
  mpl_free(t->path);
  if (t->map) munmap(t->map, t->map_len);
  memset(t, 0, sizeof *t);
}

int mpl_tokens_write(const char *path, const uint16_t *tokens, int64_t ntok, MplErr *err) {
  if (ntok < 0 || ntok > INT32_MAX) return mpl_errf(err, "%s: bad token count %lld", path, (long long)ntok);
  uint8_t hdr[TOK_HEADER_BYTES] = {0};
  int32_t h3[3] = {MPL_TOKENS_MAGIC, MPL_TOKENS_VERSION, (int32_t)ntok};
  memcpy(hdr, h3, sizeof h3);
  MplAtomicFile af;
  if (mpl_afile_open(&af, path, err)) return MPL_ERR;
  if (mpl_afile_write(&af, hdr, sizeof hdr, err) || mpl_afile_write(&af, tokens, (size_t)ntok * 2, err)) {
    mpl_afile_abort(&af);
    return MPL_ERR;
  }
  return mpl_afile_commit(&af, err);
}

/* ---- the loader ---------------------------------------------------------- */

int mpl_loader_init(MplLoader *l, const MplTokens *t, int64_t batch, int64_t seq, MplErr *err) {
  memset(l, 0, sizeof *l);
  if (batch <= 0 || seq <= 0) return mpl_errf(err, "%s: bad batch %lld or seq %lld", t->path, (long long)batch, (long long)seq);
  if (batch > INT64_MAX / seq || batch * seq > t->ntok - 1)
    return mpl_errf(err, "%s: %lld tokens are too few for one batch of %lld x %lld (needs batch*seq + 1 = %lld)",
                    t->path, (long long)t->ntok, (long long)batch, (long long)seq, (long long)(batch * seq + 1));
  l->tok = t;
  l->batch = batch;
  l->seq = seq;
  l->align = batch * seq;
  return MPL_OK;
}

static int64_t batches_per_pass(const MplLoader *l) { return (l->tok->ntok - 1) / (l->batch * l->seq); }

int64_t mpl_loader_pos_at_step(const MplLoader *l, int64_t step) {
  int64_t nb = batches_per_pass(l), k = step % nb;
  return (k < 0 ? k + nb : k) * l->batch * l->seq;
}

int64_t mpl_loader_tell(const MplLoader *l) { return l->pos; }
int64_t mpl_loader_align(const MplLoader *l) { return l->align; }

static int64_t gcd64(int64_t a, int64_t b) {
  while (b) {
    int64_t t = a % b;
    a = b, b = t;
  }
  return a;
}

int mpl_loader_seek(MplLoader *l, int64_t pos, int64_t pos_align, MplErr *err) {
  int64_t bt = l->batch * l->seq, al = pos_align > 0 ? pos_align : bt;
  if (pos < 0 || pos % al != 0 || pos + 1 >= l->tok->ntok || (al == bt && pos / bt >= batches_per_pass(l)))
    return mpl_errf(err, "%s: loader position %lld is not a batch start of this file (batch*seq = %lld, %lld tokens)",
                    l->tok->path, (long long)pos, (long long)al, (long long)l->tok->ntok);
  l->pos = pos;
  l->align = gcd64(al, bt); /* pos, pos + bt, pos + 2 bt ...: multiples of both's divisor */
  /* a batch of another size from there: past the file's end it starts at its beginning, as
     mpl_loader_advance does */
  if (l->pos + bt + 1 > l->tok->ntok) l->pos = 0, l->align = bt;
  return MPL_OK;
}

void mpl_loader_rows(const MplLoader *l, int64_t row0, int64_t nrows, int32_t *idx, int32_t *targets) {
  const uint16_t *src = l->tok->tokens + l->pos + row0 * l->seq;
  int64_t n = nrows * l->seq;
  for (int64_t i = 0; i < n; i++) {
    if (idx) idx[i] = src[i];
    if (targets) targets[i] = src[i + 1];
  }
}

void mpl_loader_advance(MplLoader *l) {
  int64_t bt = l->batch * l->seq;
  l->pos += bt;
  if (l->pos + bt + 1 > l->tok->ntok) l->pos = 0, l->align = bt;
}

/* ---- synthetic(n) ---------------------------------------------------------- */

void mpl_synth_free(MplSynth *s) {
  for (int i = 0; s->data && i < s->ninputs; i++) mpl_free(s->data[i]);
  mpl_free(s->data);
  mpl_free(s->inputs);
  memset(s, 0, sizeof *s);
}

/* The stream of input i: independent of the other inputs and of init and dropout streams. */
static uint64_t synth_stream(uint64_t seed, int i) {
  return mpl_mix64(mpl_mix64(seed ^ 0x73796E7468657469ull) ^ (uint64_t)i); /* "synthetic" */
}

/* The bytes of one element of an input of this kind. */
static size_t synth_elem(MplSynthKind k) { return k == MPL_SYNTH_BOOL ? 1 : 4; }

static void synth_draw(const MplSynthInput *in, uint64_t stream, int64_t count, void *out) {
  if (in->kind == MPL_SYNTH_F32) {
    float *f = out;
    for (int64_t k = 0; k < count; k++) f[k] = (float)mpl_normal(stream, (uint64_t)k);
    return;
  }
  if (in->kind == MPL_SYNTH_BOOL) {
    uint8_t *b = out;
    for (int64_t k = 0; k < count; k++) b[k] = mpl_uniform(stream, (uint64_t)k) < 0.5;
    return;
  }
  int32_t *v = out;
  for (int64_t k = 0; k < count; k++) {
    int64_t x = (int64_t)floor(mpl_uniform(stream, (uint64_t)k) * in->hi);
    v[k] = (int32_t)(x < in->hi ? x : in->hi - 1);
  }
}

int mpl_synth_init(MplSynth *s, int64_t n, const MplSynthInput *inputs, int ninputs, uint64_t seed, MplErr *err) {
  memset(s, 0, sizeof *s);
  if (n <= 0 || ninputs < 0) return mpl_errf(err, "synthetic(%lld): n must be positive", (long long)n);
  for (int i = 0; i < ninputs; i++)
    if (inputs[i].row_elems < 0 || (inputs[i].kind == MPL_SYNTH_I32 && inputs[i].hi < 1) ||
        (inputs[i].row_elems && n > INT64_MAX / 8 / inputs[i].row_elems))
      return mpl_errf(err, "synthetic(%lld): input %d has a bad size or range", (long long)n, i);
  s->n = n;
  s->inputs = mpl_malloc((size_t)ninputs * sizeof *s->inputs + 1);
  s->data = mpl_calloc((size_t)ninputs + 1, sizeof *s->data);
  if (!s->inputs || !s->data) goto oom;
  s->ninputs = ninputs;
  memcpy(s->inputs, inputs, (size_t)ninputs * sizeof *inputs);
  for (int i = 0; i < ninputs; i++) {
    int64_t count = n * inputs[i].row_elems;
    if (!(s->data[i] = mpl_malloc((size_t)count * synth_elem(inputs[i].kind) + 1))) goto oom;
    synth_draw(&inputs[i], synth_stream(seed, i), count, s->data[i]);
  }
  return MPL_OK;
oom:
  mpl_synth_free(s);
  return mpl_errf(err, "synthetic(%lld): out of memory", (long long)n);
}

void mpl_synth_rows(const MplSynth *s, int input, int64_t step, int64_t rows_per_step, int64_t row0, int64_t nrows,
                    void *out) {
  size_t rb = (size_t)s->inputs[input].row_elems * synth_elem(s->inputs[input].kind); /* bytes of a row */
  const uint8_t *src = s->data[input];
  uint8_t *dst = out;
  int64_t first = (int64_t)(((unsigned __int128)step * (unsigned __int128)rows_per_step + (uint64_t)row0) % (uint64_t)s->n);
  for (int64_t k = 0; k < nrows; k++) {
    int64_t ex = (first + k) % s->n;
    memcpy(dst + (size_t)k * rb, src + (size_t)ex * rb, rb);
  }
}
