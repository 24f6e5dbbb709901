/*
 * cuda_gen_host.h — the CUDA C that mplc generates for a job (compiler/cg_cuda.c) run on
 * the host, for test_cuda_jobs: the test writes a C file that includes this header, then
 * the job's CUDA source (less its `extern "C"`), then one launcher a kernel, and builds it
 * into a shared object that the mock driver (cuda_mock.c) runs the job's launches with.
 *
 * Threads, blocks and the grid are cg_cuda.c's: threadIdx, blockIdx, blockDim and gridDim
 * are this thread's variables, set before each simulated thread runs.
 *  - A kernel without warp operations runs its threads one after another, block by block.
 *  - A kernel with warp operations (__shfl_xor_sync, __shfl_sync, __syncwarp) runs each
 *    warp's 32 lanes as fibers on this thread (host_fibers.h): a lane runs until its next warp
 *    operation, and when every lane of the warp has reached it, the values the lanes posted
 *    are exchanged and all go on. A warp operation that some lanes reach while others have
 *    returned, or lanes at different operations, is divergence the GPU would not forgive:
 *    the run stops with a message naming the kernel (gen_failed).
 * What this checks is the generated kernels' arithmetic, indexing and warp protocol; not
 * timing, occupancy or the memory model beyond program order.
 */
#ifndef MPL_TEST_CUDA_GEN_HOST_H
#define MPL_TEST_CUDA_GEN_HOST_H

#include "tests/unit/cuda_bits.h"
#include "tests/unit/host_fibers.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define __global__
#define __device__ static
#define __forceinline__ inline
#define __constant__ static const
#define __restrict__ restrict

typedef struct GenDim3 {
  unsigned x, y, z;
} GenDim3;
static _Thread_local GenDim3 threadIdx, blockIdx, blockDim, gridDim;

/* CUDA's round-toward-zero conversions saturate, and NaN gives 0 */
static inline int __float2int_rz(float x) {
  if (x != x) return 0;
  if (x >= 2147483648.0f) return INT32_MAX;
  if (x <= -2147483648.0f) return INT32_MIN;
  return (int)x;
}
static inline long long __float2ll_rz(float x) {
  if (x != x) return 0;
  if (x >= 9223372036854775808.0f) return INT64_MAX;
  if (x <= -9223372036854775808.0f) return INT64_MIN;
  return (long long)x;
}

/* ---- warps as fibers ------------------------------------------------------------------ */

enum { GEN_LANES = 32 };
enum { GEN_OP_XOR, GEN_OP_BCAST, GEN_OP_SYNC };

typedef struct GenWarp {
  const char *name;
  void (*body)(void **);
  void **params;
  unsigned base; /* threadIdx.x of lane 0 */
  int op[GEN_LANES], arg[GEN_LANES];
  uint64_t post[GEN_LANES], snap[GEN_LANES];
} GenWarp;
static _Thread_local GenWarp *gen_warp;
static char gen_error[512]; /* the process's: a rank's thread launches (the mock runs one kernel at a time) */

/* The first failure of the process's launches, any thread's ("" when none); cleared by
 * reading. */
const char *gen_failed(void);
const char *gen_failed(void) {
  static _Thread_local char copy[512];
  snprintf(copy, sizeof copy, "%s", gen_error);
  gen_error[0] = 0;
  return copy;
}

static void gen_fail(const char *name, const char *why, unsigned block, unsigned lane0) {
  if (!gen_error[0])
    snprintf(gen_error, sizeof gen_error, "%s: block %u, warp of thread %u: %s", name, block, lane0, why);
}

/* A lane posts bits and waits for its warp; returns what the operation gives it. */
static uint64_t gen_warp_op(int op, int arg, uint64_t bits) {
  GenWarp *w = gen_warp;
  int me = host_fiber_self();
  w->post[me] = bits;
  w->op[me] = op, w->arg[me] = arg;
  host_fiber_wait();
  if (op == GEN_OP_XOR) return w->snap[((unsigned)me ^ (unsigned)arg) % GEN_LANES];
  if (op == GEN_OP_BCAST) return w->snap[(unsigned)arg % GEN_LANES];
  return 0;
}

#define GEN_SHFL(op, v, arg)                                                                     \
  ({                                                                                             \
    __typeof__(v) gen_v_ = (v), gen_r_;                                                          \
    uint64_t gen_b_ = 0;                                                                         \
    memcpy(&gen_b_, &gen_v_, sizeof gen_v_);                                                     \
    gen_b_ = gen_warp_op((op), (arg), gen_b_);                                                   \
    memcpy(&gen_r_, &gen_b_, sizeof gen_r_);                                                     \
    gen_r_;                                                                                      \
  })
#define __shfl_xor_sync(mask, v, s) GEN_SHFL(GEN_OP_XOR, v, (int)(s))
#define __shfl_sync(mask, v, src) GEN_SHFL(GEN_OP_BCAST, v, (int)(src))
#define __syncwarp() ((void)gen_warp_op(GEN_OP_SYNC, 0, 0))

static void gen_lane(int lane, void *ctx) {
  (void)lane;
  GenWarp *w = ctx;
  w->body(w->params);
}
static void gen_lane_enter(int lane, void *ctx) {
  GenWarp *w = ctx;
  threadIdx = (GenDim3){w->base + (unsigned)lane, 0, 0};
}
/* Every lane is at a warp operation: the same one, or the warp diverged. */
static void gen_exchange(void *ctx) {
  GenWarp *w = ctx;
  for (int l = 1; l < GEN_LANES; l++)
    if (w->op[l] != w->op[0] || w->arg[l] != w->arg[0])
      gen_fail(w->name, "the lanes are at different warp operations", blockIdx.x, w->base);
  memcpy(w->snap, w->post, sizeof w->snap);
}

/* A launch of grid blocks of `threads` threads, each calling body(params). warp: the
 * kernel has warp operations (threads must be whole warps). A failed warp stops the
 * launch (and leaves the message for gen_failed). */
static void gen_launch(const char *name, void (*body)(void **), void **params, unsigned grid, unsigned threads,
                       bool warp) {
  gridDim = (GenDim3){grid, 1, 1};
  blockDim = (GenDim3){threads, 1, 1};
  if (!warp) {
    for (unsigned b = 0; b < grid; b++) {
      blockIdx = (GenDim3){b, 0, 0};
      for (unsigned t = 0; t < threads; t++) {
        threadIdx = (GenDim3){t, 0, 0};
        body(params);
      }
    }
    return;
  }
  if (threads % GEN_LANES) {
    gen_fail(name, "a warp kernel launched with a block that is not whole warps", 0, 0);
    return;
  }
  GenWarp w = {.name = name, .body = body, .params = params};
  gen_warp = &w;
  for (unsigned b = 0; b < grid; b++) {
    blockIdx = (GenDim3){b, 0, 0};
    for (unsigned base = 0; base < threads; base += GEN_LANES) {
      w.base = base;
      if (!host_fibers_run(GEN_LANES, gen_lane, gen_lane_enter, gen_exchange, &w)) {
        gen_fail(name, "some lanes returned while others wait at a warp operation", b, base);
        return;
      }
    }
  }
}

#endif
