/*
 * test_embed.c — an embedding's gradient (JS_EMB_GRAD; device.h's MplEmbGrad) on the cpu
 * device and as runtime/cuda/embed.cu's kernel compiled for the host, against the
 * definition written out here: out[r, :] = the sum, in position order from 0, of dy[p, :]
 * over the positions p whose index is r; an index outside [0, K) adds nothing.
 *
 *  - float64 sums of the same terms: within 1e-5 relative (f32 rounding only);
 *  - the cpu device (1 and 3 threads) and the CUDA kernel give the definition's f32 bits:
 *    the same additions in the same order (mplrun's CPU and GPU gradients agree bitwise);
 *  - shapes: a row named by many positions (a long serial sum crossing the kernel's tiles),
 *    rows no position names (0), indices below 0 and past K, one position, one column,
 *    rows wider than a block's pass of columns (EMB_THREADS x EMB_COLS), positions more
 *    than one tile;
 *  - NVRTC compiles the kernel for compute_80 and compute_90 without a word in its log.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device.h"
#include "runtime/mpl.h"

#include "cuda_host.h"
#include "guarded.h"
#define EMB_THREADS 32 /* any power of two: the additions' order does not depend on it */
#include "runtime/cuda/embed.cu"

typedef struct Case {
  int64_t M, N, K;
  int skew; /* 1: most positions name row 3; 2: indices out of range too; 3: position p names row p % K */
} Case;

static const Case cases[] = {
    {1, 1, 1, 0},      /* one position, one column, one row */
    {40, 7, 5, 0},     /* more positions than rows: every row named several times */
    {100, 300, 50, 1}, /* 300 columns: two passes of 32 x 8; row 3 named ~70 times, over 4 tiles */
    {70, 33, 200, 2},  /* most rows never named; indices -5 .. K + 4 */
    {257, 16, 9, 2},   /* a last tile of one position */
    {6, 2500, 10, 3},  /* ten passes of columns, the last one ragged; each position the first of its row, the last
                          one's row ending where dy does (pass 99: a column bound of the pass alone read past it) */
};

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_u(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

typedef struct Bufs {
  int32_t *idx;
  float *dy, *want, *got;
  double *sum;
} Bufs;

static void make(const Case *c, Bufs *b) {
  b->idx = guarded(4 * c->M), b->dy = guarded(4 * c->M * c->N); /* (a read past either faults) */
  b->want = malloc(4 * c->K * c->N), b->got = malloc(4 * c->K * c->N), b->sum = calloc(c->K * c->N, 8);
  for (int64_t p = 0; p < c->M; p++) {
    int64_t r = (int64_t)(next_u() % (uint64_t)c->K);
    if (c->skew == 1 && next_u() % 10 < 7) r = 3 % c->K;
    if (c->skew == 2 && next_u() % 5 == 0) r = (int64_t)(next_u() % 10) - 5 + (next_u() % 2 ? c->K : 0);
    if (c->skew == 3) r = p % c->K;
    b->idx[p] = (int32_t)r;
  }
  for (int64_t i = 0; i < c->M * c->N; i++) b->dy[i] = (float)((double)(next_u() >> 11) / 9007199254740992.0 * 2 - 1);
  /* the definition, in f32 and in float64 */
  for (int64_t i = 0; i < c->K * c->N; i++) b->want[i] = 0.0f;
  for (int64_t p = 0; p < c->M; p++) {
    if (b->idx[p] < 0 || b->idx[p] >= c->K) continue;
    for (int64_t j = 0; j < c->N; j++) {
      b->want[b->idx[p] * c->N + j] += b->dy[p * c->N + j];
      b->sum[b->idx[p] * c->N + j] += (double)b->dy[p * c->N + j];
    }
  }
}

static void unmake(Bufs *b) { unguard(b->idx), unguard(b->dy), free(b->want), free(b->got), free(b->sum); }

static void check_bits(const Case *c, const Bufs *b, const char *who) {
  for (int64_t i = 0; i < c->K * c->N; i++) {
    ck_assert_msg(memcmp(&b->got[i], &b->want[i], 4) == 0, "%s, M%lld N%lld K%lld: out[%lld, %lld] = %.9g, not %.9g",
                  who, (long long)c->M, (long long)c->N, (long long)c->K, (long long)(i / c->N), (long long)(i % c->N),
                  (double)b->got[i], (double)b->want[i]);
    ck_assert_msg(fabs(b->got[i] - b->sum[i]) <= 1e-5 * (1 + fabs(b->sum[i])), "%s: out[%lld] %.9g vs float64 %.12g",
                  who, (long long)i, (double)b->got[i], b->sum[i]);
  }
}

START_TEST(test_cpu_device) {
  const Case *c = &cases[_i / 2];
  int threads = _i % 2 ? 3 : 1;
  Bufs b;
  make(c, &b);
  const MplDeviceOps *ops = mpl_device_find("cpu");
  ck_assert(ops && ops->emb_grad);
  MplDevice d = {.ops = ops};
  MplErr err = {{0}};
  ck_assert_msg(ops->init(&d, 0, threads, &err) == MPL_OK, "%s", err.msg);
  memset(b.got, 0x7f, 4 * c->K * c->N); /* every element written, none added to */
  MplEmbGrad a = {.M = c->M, .N = c->N, .K = c->K, .idx = b.idx, .dy = b.dy, .out = b.got};
  ck_assert_msg(ops->emb_grad(&d, &a, &err) == MPL_OK, "%s", err.msg);
  ops->free(&d);
  check_bits(c, &b, threads > 1 ? "cpu, 3 threads" : "cpu, 1 thread");
  unmake(&b);
}
END_TEST

typedef struct HostLaunch {
  const Case *c;
  Bufs *b;
} HostLaunch;

static void run_kernel(void *ctx) {
  const HostLaunch *l = ctx;
  mpl_emb_grad(l->b->idx, l->b->dy, l->b->got, l->c->M, l->c->N, l->c->K);
}

START_TEST(test_cuda_kernel_on_host) {
  const Case *c = &cases[_i];
  Bufs b;
  make(c, &b);
  memset(b.got, 0, 4 * c->K * c->N); /* cuda_emb_grad's memset */
  HostLaunch l = {c, &b};
  host_launch_grid(c->M, EMB_THREADS, run_kernel, &l);
  check_bits(c, &b, "cuda kernel on the host");
  unmake(&b);
}
END_TEST

START_TEST(test_nvrtc_compiles_kernel) {
  const char *const entries[] = {"mpl_emb_grad"};
  host_check_nvrtc(mpl_cuda_emb_compile, "the embedding gradient's kernel", entries, 1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("embed");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  int n = (int)(sizeof cases / sizeof cases[0]);
  tcase_add_loop_test(tc, test_cpu_device, 0, 2 * n);
  tcase_add_loop_test(tc, test_cuda_kernel_on_host, 0, n);
  tcase_add_test(tc, test_nvrtc_compiles_kernel);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
