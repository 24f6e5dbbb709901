/*
 * cuda_host.h — CUDA C kernels run on the host, for the unit tests of the runtime's own
 * CUDA programs (test_sdpa.c: runtime/cuda/sdpa.cu; test_ce.c: runtime/cuda/ce.cu;
 * test_optim_cu.c: runtime/cuda/optim.cu) on a
 * machine without a GPU. Include it (after check.h) before the .cu file: the file's
 * MPL_* macros become host C, each block's threads fibers (host_fibers.h) that take turns
 * on the calling thread, __syncthreads a barrier of the fibers, __shared__ arrays static
 * (so blocks run one after another).
 * What this checks is the kernels' arithmetic and indexing; not warps, occupancy or speed.
 */
#ifndef MPL_TEST_CUDA_HOST_H
#define MPL_TEST_CUDA_HOST_H

#include "cuda_bits.h"
#include "host_fibers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/mpl.h"

#define MPL_CU_HOST
typedef struct { unsigned x, y, z; } HostDim3;
static _Thread_local HostDim3 threadIdx, blockIdx, blockDim, gridDim;
#define MPL_KERNEL(nthreads) static __attribute__((unused)) void /* (a test runs some of a build's kernels) */
#define MPL_DEV static inline
/* __shared__ arrays: static, in a section of their own, which each block starts with
 * filled with 0xFF bytes (a float's NaN, an int's -1), as a GPU's shared memory starts
 * with whatever the last block left: a read of an element the block has not written
 * shows in the numbers. */
#define MPL_SHARED static __attribute__((section("mpl_shared")))
#define MPL_SYNC() host_fiber_wait()
#define MPL_UNROLL
#define MPL_NO_UNROLL
#define MPL_INF INFINITY
#define __restrict__ restrict


/* Warp-wide operations, for kernels whose every thread of a warp reaches each of them (a
 * warp's wait, host_fiber_warp_wait, stands in for its convergence): a thread posts its
 * operands, the warp waits, each reads its warp's, the warp waits again. At most 1024
 * threads a block. */
enum { HOST_MAX_THREADS = 1024 };
static float host_xchg_f[HOST_MAX_THREADS];
static unsigned host_xchg_a[HOST_MAX_THREADS][4], host_xchg_b[HOST_MAX_THREADS][2];

/* __shfl_xor_sync: lane ^ m's value */
static inline float host_shfl_xor(float v, int m) {
  host_xchg_f[threadIdx.x] = v;
  host_fiber_warp_wait();
  float r = host_xchg_f[threadIdx.x ^ (unsigned)m];
  host_fiber_warp_wait();
  return r;
}
#define MPL_SHFL_XOR(v, m) host_shfl_xor((v), (m))

/* The two halves of a modelled mma.sync: host_mma_post posts this thread's fragments and waits
 * for its warp's (in host_xchg_a and _b from the returned first lane on); host_mma_sum, once
 * the thread has read from the posts its two rows of A (A[h], row groupID + 8 h, kdim long)
 * and its two columns of B (B[kk][c], column 2 threadID_in_group + c), waits again and adds
 * to this thread's d[i] (row groupID + 8 (i >> 1), column 2 threadID_in_group + (i & 1))
 * that row of A times that column of B, the kdim products summed in order in double,
 * rounded once. (Every element of A and B is read by some thread of the warp.) */
static inline unsigned host_mma_post(const unsigned a[4], const unsigned b[2]) {
  unsigned me = threadIdx.x;
  memcpy(host_xchg_a[me], a, sizeof host_xchg_a[me]);
  memcpy(host_xchg_b[me], b, sizeof host_xchg_b[me]);
  host_fiber_warp_wait();
  return me & ~31u;
}
static inline void host_mma_sum(float d[4], const float A[2][16], const float B[16][2], int kdim) {
  host_fiber_warp_wait();
  for (int i = 0; i < 4; i++) {
    double acc = d[i];
    for (int kk = 0; kk < kdim; kk++) acc += (double)A[i >> 1][kk] * B[kk][i & 1];
    d[i] = (float)acc;
  }
}

/* mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32, d += a b, written from the PTX ISA's
 * fragment layouts (groupID = lane >> 2, threadID_in_group = lane % 4; two bf16 a register,
 * the first element low): A's register r holds row groupID + 8 (r & 1), columns
 * 2 threadID_in_group + {0, 1} + 8 (r >> 1); B's register r rows (k) 2 threadID_in_group +
 * {0, 1} + 8 r of column groupID; D's element i row groupID + 8 (i >> 1), column
 * 2 threadID_in_group + (i & 1). Each element's 16 products summed in order, in double.
 * Read backwards: A's element (row, k) is in lane 4 (row % 8) + (k % 8) / 2, register
 * row / 8 + 2 (k / 8), half k % 2; B's (k, col) in lane 4 col + (k % 8) / 2, register k / 8,
 * half k % 2. */
static inline float host_bf16_at(unsigned reg, int hi) { return __uint_as_float((hi ? reg >> 16 : reg & 0xFFFFu) << 16); }

static inline void mpl_mma_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
  unsigned w0 = host_mma_post(a, b), gid = (threadIdx.x & 31) >> 2, tid = threadIdx.x & 3;
  float A[2][16], B[16][2];
  for (int k = 0; k < 16; k++) {
    for (int h = 0; h < 2; h++) {
      unsigned row = gid + 8 * (unsigned)h, col = 2 * tid + (unsigned)h;
      A[h][k] = host_bf16_at(host_xchg_a[w0 + 4 * (row % 8) + (k % 8) / 2][row / 8 + 2 * (k / 8)], k % 2);
      B[k][h] = host_bf16_at(host_xchg_b[w0 + 4 * col + (k % 8) / 2][k / 8], k % 2);
    }
  }
  host_mma_sum(d, A, B, 16);
}

/* cvt.rna.tf32.f32: x rounded to tf32 (10 bits of significand; to nearest, ties away from
 * zero), as f32 bits whose low 13 are 0; past the largest tf32 it is infinite. An infinity or
 * NaN is only masked, as the hardware's instructions for it do (sm_86's SASS: a NaN whose
 * payload lies in the low 13 bits becomes an infinity). */
static inline unsigned mpl_tf32(float x) {
  unsigned u = __float_as_uint(x);
  if ((u & 0x7F800000u) == 0x7F800000u) return u & 0xFFFFE000u;
  return (u + 0x1000u) & 0xFFFFE000u;
}

/* mma.sync.m16n8k8.row.col.f32.tf32.tf32.f32, d += a b, written from the PTX ISA's fragment
 * layouts for .tf32 (one element a register): A's register r holds row groupID + 8 (r & 1),
 * column threadID_in_group + 4 (r >> 1); B's register r row (k) threadID_in_group + 4 r of
 * column groupID; D as mpl_mma_bf16's. Every operand must be a tf32 value (the kernels round
 * them with mpl_tf32: the hardware ignores the low bits). Each element's 8 products summed
 * in order, in double. Read backwards: A's element (row, k) is in lane 4 (row % 8) + k % 4,
 * register row / 8 + 2 (k / 4); B's (k, col) in lane 4 col + k % 4, register k / 4. */
static inline float host_tf32_at(unsigned reg) {
  if (reg & 0x1FFFu) ck_abort_msg("an mma operand is not a tf32 value (bits %08x)", reg); /* (ck_assert is slow here) */
  return __uint_as_float(reg);
}
static inline void mpl_mma_tf32(float d[4], const unsigned a[4], const unsigned b[2]) {
  unsigned w0 = host_mma_post(a, b), gid = (threadIdx.x & 31) >> 2, tid = threadIdx.x & 3;
  float A[2][16], B[16][2];
  for (int k = 0; k < 8; k++) {
    for (int h = 0; h < 2; h++) {
      unsigned row = gid + 8 * (unsigned)h, col = 2 * tid + (unsigned)h;
      A[h][k] = host_tf32_at(host_xchg_a[w0 + 4 * (row % 8) + k % 4][row / 8 + 2 * (k / 4)]);
      B[k][h] = host_tf32_at(host_xchg_b[w0 + 4 * col + k % 4][k / 4]);
    }
  }
  host_mma_sum(d, A, B, 8);
}

typedef struct HostGrid {
  void (*body)(void *);
  void *ctx;
  unsigned blocks;
} HostGrid;

static void host_grid_enter(int t, void *ctx) {
  (void)ctx;
  threadIdx = (HostDim3){(unsigned)t, 0, 0};
}

/* The section's bounds (the linker's; weak: a test whose kernels have no __shared__
 * array has no section), and the block whose arrays were last filled. */
extern char __start_mpl_shared[] __attribute__((weak)), __stop_mpl_shared[] __attribute__((weak));
static long long host_shared_block = -1;

/* Thread t of every block in turn: the block's body, then a barrier, so that the next
 * block starts (and reuses the static __shared__ arrays) only when all of this one is done.
 * The first of a block's threads to start fills the arrays. */
static void host_grid_thread(int t, void *ctx) {
  const HostGrid *g = ctx;
  (void)t;
  for (unsigned b = 0; b < g->blocks; b++) {
    blockIdx = (HostDim3){b, 0, 0};
    if (host_shared_block != (long long)b && __start_mpl_shared) {
      memset(__start_mpl_shared, 0xFF, (size_t)(__stop_mpl_shared - __start_mpl_shared));
      host_shared_block = b;
    }
    g->body(g->ctx);
    host_fiber_wait();
  }
}

/* One launch of `blocks` blocks of `threads` threads, each thread calling body(ctx) (which
 * calls the kernel): blocks one after another, a block's threads as fibers. */
static inline void host_launch_grid(long long blocks, unsigned threads, void (*body)(void *), void *ctx) {
  ck_assert(blocks >= 0 && blocks <= 0xFFFFFFFFll && threads >= 1 && threads <= HOST_MAX_THREADS);
  HostGrid g = {body, ctx, (unsigned)blocks};
  host_shared_block = -1;
  blockDim = (HostDim3){threads, 1, 1};
  gridDim = (HostDim3){(unsigned)blocks, 1, 1};
  ck_assert_msg(host_fibers_run((int)threads, host_grid_thread, host_grid_enter, NULL, &g),
                "a kernel's threads diverged at a barrier (some returned while others wait)");
}

/* A launch whose every thread runs body(params): a mock driver's cuLaunchKernel, with body
 * decoding the params with its kernel's own parameter types (tests/unit/cuda_mock*.c). */
typedef void (*HostParamsBody)(void **params);
typedef struct HostParamsLaunch {
  HostParamsBody body;
  void **params;
} HostParamsLaunch;
static inline void host_params_thread(void *ctx) {
  const HostParamsLaunch *l = ctx;
  l->body(l->params);
}
static inline void host_launch_params(HostParamsBody body, void **params, unsigned grid, unsigned threads) {
  host_launch_grid(grid, threads, host_params_thread, &(HostParamsLaunch){body, params});
}

/* The tests' bf16 rounding: the nearest value with 8 significant bits (subnormal spacing
 * below 2^-126), ties to even by nearbyint, from x's exponent (finite x). Independent of
 * the kernels' bit arithmetic. */
static inline double host_round_bf16(double x) {
  if (isnan(x) || isinf(x) || x == 0) return x;
  int e;
  frexp(x, &e);
  int q = e - 8 > -133 ? e - 8 : -133;
  return ldexp(nearbyint(ldexp(x, -q)), q);
}

/* NVRTC compiles a runtime program (compile: one of device.h's mpl_cuda_*_compile) for
 * compute_80 and compute_90 with nothing in its log, and its PTX has each of the n entries.
 * Built without CUDA: a note, nothing checked. */
typedef int (*HostNvrtcFn)(const char *arch, char **ptx, char *log, size_t logn, MplErr *err);
static inline void host_check_nvrtc(HostNvrtcFn compile, const char *what, const char *const *entries, int n) {
#ifndef MPL_HAVE_CUDA
  (void)compile, (void)entries, (void)n;
  printf("note: built without CUDA; %s is not compiled\n", what);
#else
  const char *const archs[] = {"compute_80", "compute_90"};
  for (int a = 0; a < 2; a++) {
    char *ptx = NULL, log[4096];
    MplErr err = {{0}};
    ck_assert_msg(compile(archs[a], &ptx, log, sizeof log, &err) == MPL_OK, "%s: %s", what, err.msg);
    ck_assert_msg(log[0] == 0, "NVRTC said, for %s (%s): %s", archs[a], what, log);
    for (int e = 0; e < n; e++) {
      char entry[64];
      snprintf(entry, sizeof entry, ".entry %s(", entries[e]);
      ck_assert_msg(strstr(ptx, entry) != NULL, "%s: no %s in the PTX", archs[a], entries[e]);
    }
    mpl_free(ptx);
  }
#endif
}

#endif
