/*
 * gemm_bench.c — GFLOP/s of mpl_gemm_f32 (oneDNN sgemm) at 1 and 2 OpenMP threads, and
 * for two rank threads at 1 thread each (the --threads 1 layout of two CPU ranks), at
 * 1024^3 and GPT-ish shapes. A benchmark, not a test: it prints numbers and exits 0.
 *
 * With --bf16 it compares, on one thread, the f32 product with precision = bf16's
 * (mpl_gemm_bf16_batched: oneDNN's bf16 GEMM where the CPU has avx512_bf16, operands
 * converted to bf16 on each call) on operands that hold bf16 values: the measurement
 * behind gemm.c's choice of shapes.
 *
 * With --peak it prints only the machine's single-precision GEMM peak as two lines for
 * tests/bench/bench.sh, "peak_1thread_gflops X" and "peak_2ranks_gflops Y": the best of
 * the square and the GPT-ish forward shapes, on one thread and on two rank threads.
 *
 * Build and run from the repository root:
 *   gcc -std=gnu11 -O2 -I. -pthread tests/bench/gemm_bench.c runtime/gemm.c runtime/alloc.c \
 *       -ldnnl -lm -o build/gemm_bench && build/gemm_bench
 */
#include "runtime/mpl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct Shape {
  const char *what;
  bool ta, tb;
  int64_t M, N, K;
} Shape;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *rand_matrix(int64_t n) {
  float *x = mpl_malloc((size_t)n * sizeof *x);
  for (int64_t i = 0; i < n; i++) x[i] = (float)(rand() % 256 - 128) * 0x1p-7f; /* exact in bf16 */
  return x;
}

typedef struct Run {
  const Shape *s;
  int threads;
  double gflops;
  MplGemmBf16 *bf16; /* non-NULL: the product through mpl_gemm_bf16_batched */
} Run;

static void product(const Run *r, const float *A, int64_t lda, const float *B, int64_t ldb, float *C) {
  const Shape *s = r->s;
  if (r->bf16)
    mpl_gemm_bf16_batched(r->bf16, s->ta, s->tb, s->M, s->N, s->K, 1, A, lda, 0, B, ldb, 0, 0, C, s->N, 0, 1);
  else
    mpl_gemm_f32(s->ta, s->tb, s->M, s->N, s->K, 1, A, lda, B, ldb, 0, C, s->N);
}

/* Repeats the product for at least 0.5 s after a 0.2 s warm-up; GFLOP/s of this thread. */
static void *bench_one(void *p) {
  Run *r = p;
  const Shape *s = r->s;
  mpl_gemm_set_threads(r->threads);
  float *A = rand_matrix(s->M * s->K), *B = rand_matrix(s->K * s->N), *C = rand_matrix(s->M * s->N);
  int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
  double t0 = now_s(), t;
  while (now_s() - t0 < 0.2) product(r, A, lda, B, ldb, C);
  int reps = 0;
  t0 = now_s();
  do {
    product(r, A, lda, B, ldb, C);
    reps++;
    t = now_s() - t0;
  } while (t < 0.5);
  r->gflops = 2.0 * (double)s->M * (double)s->N * (double)s->K * reps / t * 1e-9;
  mpl_free(A), mpl_free(B), mpl_free(C);
  return NULL;
}

/* The best 1-thread and 2-rank-thread rates over the first `n` shapes. */
static int print_peak(const Shape *shapes, int n) {
  double one_best = 0, two_best = 0;
  for (int i = 0; i < n; i++) {
    Run one = {&shapes[i], 1, 0, NULL}, ranks[2] = {{&shapes[i], 1, 0, NULL}, {&shapes[i], 1, 0, NULL}};
    bench_one(&one);
    pthread_t th[2];
    for (int r = 0; r < 2; r++) pthread_create(&th[r], NULL, bench_one, &ranks[r]);
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    if (one.gflops > one_best) one_best = one.gflops;
    if (ranks[0].gflops + ranks[1].gflops > two_best) two_best = ranks[0].gflops + ranks[1].gflops;
  }
  printf("peak_1thread_gflops %.1f\npeak_2ranks_gflops %.1f\n", one_best, two_best);
  return 0;
}

/* --bf16: the f32 product against the bf16 one, one thread, these shapes and smaller ones. */
static int print_bf16(const Shape *shapes, int n) {
  const Shape more[] = {{"256^3", false, false, 256, 256, 256},
                        {"128x128x64", false, false, 128, 128, 64},
                        {"64x64x64", false, false, 64, 64, 64}};
  MplGemmBf16 w;
  mpl_gemm_bf16_init(&w);
  printf("bf16 units: %s\n", w.hw ? "yes (avx512_bf16, oneDNN's bf16 GEMM)" : "no: the bf16 column is the f32 product");
  printf("%-18s %16s %10s %10s %8s\n", "shape", "MxNxK", "f32", "bf16", "ratio");
  for (int i = 0; i < n + 3; i++) {
    const Shape *s = i < n ? &shapes[i] : &more[i - n];
    Run f = {s, 1, 0, NULL}, b = {s, 1, 0, &w};
    bench_one(&f);
    bench_one(&b);
    char dims[48];
    snprintf(dims, sizeof dims, "%lldx%lldx%lld", (long long)s->M, (long long)s->N, (long long)s->K);
    printf("%-18s %16s %10.1f %10.1f %7.2fx   GFLOP/s\n", s->what, dims, f.gflops, b.gflops, b.gflops / f.gflops);
  }
  mpl_gemm_bf16_free(&w);
  return 0;
}

int main(int argc, char **argv) {
  const Shape shapes[] = {
      {"square", false, false, 1024, 1024, 1024},
      {"qkv fwd", false, false, 2048, 1152, 384},
      {"mlp down fwd", false, false, 2048, 384, 1536},
      {"mlp down dX (NT)", false, true, 2048, 1536, 384},
      {"mlp down dW (TN)", true, false, 1536, 384, 2048},
  };
  if (argc > 1 && !strcmp(argv[1], "--peak")) return print_peak(shapes, 2);
  if (argc > 1 && !strcmp(argv[1], "--bf16")) return print_bf16(shapes, (int)(sizeof shapes / sizeof *shapes));
  /* The first 2-thread products of a process can run slowly (the OpenMP team warming up);
   * keep that out of the table. An OpenMP team is also hurt far more than two independent
   * rank threads by other load on the machine (the team waits for its slowest thread). */
  Run warm = {&shapes[0], 2, 0, NULL};
  for (int i = 0; i < 3; i++) bench_one(&warm);
  printf("%-18s %16s %10s %10s %18s\n", "shape", "MxNxK", "1 thread", "2 threads", "2 ranks x 1 thread");
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    const Shape *s = &shapes[i];
    Run one = {s, 1, 0, NULL}, two = {s, 2, 0, NULL}, ranks[2] = {{s, 1, 0, NULL}, {s, 1, 0, NULL}};
    bench_one(&one);
    bench_one(&two);
    pthread_t th[2];
    for (int r = 0; r < 2; r++) pthread_create(&th[r], NULL, bench_one, &ranks[r]);
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    char dims[48];
    snprintf(dims, sizeof dims, "%lldx%lldx%lld", (long long)s->M, (long long)s->N, (long long)s->K);
    printf("%-18s %16s %10.1f %10.1f %18.1f   GFLOP/s\n", s->what, dims, one.gflops, two.gflops,
           ranks[0].gflops + ranks[1].gflops);
  }
  return 0;
}
