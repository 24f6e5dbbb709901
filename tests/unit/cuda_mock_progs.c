/*
 * cuda_mock_progs.c — the runtime's optimizer, cross-entropy and embedding-gradient kernels
 * (runtime/cuda/optim.cu, ce.cu, embed.cu) compiled as host C (tests/unit/cuda_host.h), each
 * behind a dispatcher that cuda_mock.c's cuLaunchKernel calls: it reads the launch's
 * parameter array with the kernel's own parameter types (the .cu prototype), checks that
 * every buffer the kernel will touch lies in device memory, and runs the grid.
 *
 * Invariants: the block sizes in the tables are the ones the kernels assume (256: the
 * fixed reduction trees, CE_THREADS, EMB_THREADS), so a launch with another fails in the
 * mock; the list kernels' MplList is read by value from the parameter, as the GPU does.
 */
#include <check.h>

#include "cuda_host.h"
#include "cuda_mock.h"

#include "runtime/cuda/optim.cu"

#include "runtime/cuda/ce.cu"

#include "runtime/cuda/embed.cu"

#define P(t, i) (*(t *)p[i])

static const void *dev_f32(const void *ptr, long long n) { return cuda_mock_dev(ptr, 4 * (size_t)n); }

/* ---- optim.cu ---------------------------------------------------------------------------- */

static void sgd_body(void **p) {
  mpl_sgd(P(float *, 0), P(const float *, 1), P(float *, 2), P(long long, 3), P(float, 4), P(float, 5), P(int, 6));
}
static void sgd_run(void **p, unsigned grid, unsigned threads) {
  long long n = P(long long, 3);
  dev_f32(P(float *, 0), n), dev_f32(P(float *, 1), n);
  if (P(int, 6)) dev_f32(P(float *, 2), n); /* mode 0: no momentum buffer */
  host_launch_params(sgd_body, p, grid, threads);
}

static void adamw_body(void **p) {
  mpl_adamw(P(float *, 0), P(const float *, 1), P(float *, 2), P(float *, 3), P(long long, 4), P(float, 5), P(float, 6),
            P(float, 7), P(float, 8), P(float, 9), P(float, 10), P(float, 11), P(int, 12), P(int, 13));
}
static void adamw_run(void **p, unsigned grid, unsigned threads) {
  for (int i = 0; i < 4; i++) dev_f32(P(float *, i), P(long long, 4));
  host_launch_params(adamw_body, p, grid, threads);
}

static void scale_body(void **p) { mpl_scale(P(float *, 0), P(long long, 1), P(float, 2)); }
static void scale_run(void **p, unsigned grid, unsigned threads) {
  dev_f32(P(float *, 0), P(long long, 1));
  host_launch_params(scale_body, p, grid, threads);
}

static void sumsq_body(void **p) { mpl_sumsq(P(const float *, 0), P(long long, 1), P(double *, 2)); }
static void sumsq_run(void **p, unsigned grid, unsigned threads) {
  dev_f32(P(float *, 0), P(long long, 1));
  cuda_mock_dev(P(double *, 2), 8 * (size_t)grid);
  host_launch_params(sumsq_body, p, grid, threads);
}

static void sumsq_final_body(void **p) { mpl_sumsq_final(P(const double *, 0), P(int, 1), P(double *, 2)); }
static void sumsq_final_run(void **p, unsigned grid, unsigned threads) {
  cuda_mock_dev(P(double *, 0), 8 * (size_t)P(int, 1));
  cuda_mock_dev(P(double *, 2), 8);
  host_launch_params(sumsq_final_body, p, grid, threads);
}

/* The list's tensors: the given words (0 p, 1 g, 2 m, 3 v) of each row are device arrays
 * of n floats (SGD's m only with momentum: mode, word 6, not 0); the rows' ranges of
 * blocks end at the grid's. */
static void check_list(const MplList *L, const int *words, int nwords, bool sgd, unsigned grid) {
  int count = (int)L->w[MPL_LIST * MPL_LIST_ROW];
  ck_assert(count >= 1 && count <= MPL_LIST);
  for (int k = 0; k < count; k++) {
    const long long *r = L->w + k * MPL_LIST_ROW;
    for (int i = 0; i < nwords; i++)
      if (words[i] != 2 || !sgd || r[6] != 0) dev_f32((const void *)(uintptr_t)r[words[i]], r[4]);
  }
  ck_assert_msg(L->w[(count - 1) * MPL_LIST_ROW + 7] == grid, "list grid %u, rows end at %lld", grid,
                L->w[(count - 1) * MPL_LIST_ROW + 7]);
}

static void sgd_list_body(void **p) { mpl_sgd_list(P(MplList, 0), P(float, 1), P(float, 2)); }
static void sgd_list_run(void **p, unsigned grid, unsigned threads) {
  check_list(&P(MplList, 0), (const int[]){0, 1, 2}, 3, true, grid);
  host_launch_params(sgd_list_body, p, grid, threads);
}

static void adamw_list_body(void **p) {
  mpl_adamw_list(P(MplList, 0), P(float, 1), P(float, 2), P(float, 3), P(float, 4), P(float, 5), P(float, 6), P(int, 7));
}
static void adamw_list_run(void **p, unsigned grid, unsigned threads) {
  check_list(&P(MplList, 0), (const int[]){0, 1, 2, 3}, 4, false, grid);
  host_launch_params(adamw_list_body, p, grid, threads);
}

static void scale_list_body(void **p) { mpl_scale_list(P(MplList, 0), P(float, 1)); }
static void scale_list_run(void **p, unsigned grid, unsigned threads) {
  check_list(&P(MplList, 0), (const int[]){0}, 1, false, grid);
  host_launch_params(scale_list_body, p, grid, threads);
}

static void sumsq_list_body(void **p) { mpl_sumsq_list(P(MplList, 0), P(double *, 1)); }
static void sumsq_list_run(void **p, unsigned grid, unsigned threads) {
  check_list(&P(MplList, 0), (const int[]){0}, 1, false, grid);
  cuda_mock_dev(P(double *, 1), 8 * (size_t)grid);
  host_launch_params(sumsq_list_body, p, grid, threads);
}

/* Block k: tensor k's partial sums into its `out` (word 3). */
static void sumsq_final_list_body(void **p) { mpl_sumsq_final_list(P(MplList, 0), P(const double *, 1)); }
static void sumsq_final_list_run(void **p, unsigned grid, unsigned threads) {
  const MplList *L = &P(MplList, 0);
  ck_assert_int_eq(grid, L->w[MPL_LIST * MPL_LIST_ROW]);
  for (unsigned k = 0; k < grid; k++) cuda_mock_dev((const void *)(uintptr_t)L->w[k * MPL_LIST_ROW + 3], 8);
  host_launch_params(sumsq_final_list_body, p, grid, threads);
}

const MockKernel cuda_mock_optim[] = {
    {"mpl_sgd", 256, sgd_run, NULL},
    {"mpl_adamw", 256, adamw_run, NULL},
    {"mpl_scale", 256, scale_run, NULL},
    {"mpl_sumsq", 256, sumsq_run, NULL},
    {"mpl_sumsq_final", 256, sumsq_final_run, NULL},
    {"mpl_sgd_list", 256, sgd_list_run, NULL},
    {"mpl_adamw_list", 256, adamw_list_run, NULL},
    {"mpl_scale_list", 256, scale_list_run, NULL},
    {"mpl_sumsq_list", 256, sumsq_list_run, NULL},
    {"mpl_sumsq_final_list", 256, sumsq_final_list_run, NULL},
};
const int cuda_mock_noptim = sizeof cuda_mock_optim / sizeof cuda_mock_optim[0];

/* ---- ce.cu --------------------------------------------------------------------------------- */

static void ce_rows_body(void **p) {
  mpl_ce_rows(P(float *, 0), P(long long, 1), P(long long, 2), P(const int *, 3), P(double *, 4), P(float, 5), P(int, 6),
              P(unsigned short *, 7));
}
/* grid: the block's rows, from r0 */
static void ce_rows_run(void **p, unsigned grid, unsigned threads) {
  long long V = P(long long, 1), rows = P(long long, 2) + grid;
  dev_f32(P(float *, 0), grid * V);
  cuda_mock_dev(P(const int *, 3), 4 * (size_t)rows);
  cuda_mock_dev(P(double *, 4), 8 * (size_t)rows);
  if (P(unsigned short *, 7)) cuda_mock_dev(P(unsigned short *, 7), 2 * (size_t)(grid * V));
  host_launch_params(ce_rows_body, p, grid, threads);
}

static void ce_finish_body(void **p) { mpl_ce_finish(P(const double *, 0), P(float *, 1), P(long long, 2)); }
static void ce_finish_run(void **p, unsigned grid, unsigned threads) {
  ck_assert_int_eq(grid, 1);
  cuda_mock_dev(P(const double *, 0), 8 * (size_t)P(long long, 2));
  dev_f32(P(float *, 1), 1);
  host_launch_params(ce_finish_body, p, grid, threads);
}

const MockKernel cuda_mock_ce[] = {
    {"mpl_ce_rows", CE_THREADS, ce_rows_run, NULL},
    {"mpl_ce_finish", CE_THREADS, ce_finish_run, NULL},
};
const int cuda_mock_nce = sizeof cuda_mock_ce / sizeof cuda_mock_ce[0];

/* ---- embed.cu ---------------------------------------------------------------------------------- */

static void emb_body(void **p) {
  mpl_emb_grad(P(const int *, 0), P(const float *, 1), P(float *, 2), P(long long, 3), P(long long, 4), P(long long, 5));
}
/* grid: a block per position */
static void emb_run(void **p, unsigned grid, unsigned threads) {
  long long M = P(long long, 3), N = P(long long, 4), K = P(long long, 5);
  ck_assert_int_eq(grid, M);
  cuda_mock_dev(P(const int *, 0), 4 * (size_t)M);
  dev_f32(P(const float *, 1), M * N), dev_f32(P(float *, 2), K * N);
  host_launch_params(emb_body, p, grid, threads);
}

const MockKernel cuda_mock_emb[] = {{"mpl_emb_grad", EMB_THREADS, emb_run, NULL}};
const int cuda_mock_nemb = 1;
