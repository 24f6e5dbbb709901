/*
 * cuda_mock_sdpa.c — the fused attention's kernels (runtime/cuda/sdpa.cu) compiled as host C
 * (tests/unit/cuda_host.h) in three builds, each behind dispatchers for cuda_mock.c's
 * cuLaunchKernel (cuda_mock.h's MockSdpaBuild):
 *  - f32 inputs, head sizes 16 (q, k) and 8 (v): the CUDA-core kernels, and the tensor-core
 *    ones with tf32 operands (a tf32 step's; dk and dv in two kernels) and with three tf32
 *    products for each f32 one (an f32 step's);
 *  - f32 inputs, 16 and 16: the same (test_cuda_jobs' models);
 *  - f32 inputs, 128 and 128 (Llama's): the same, the 3xtf32 ones reading q (k) from shared
 *    memory and dout (v) from global (SDPA_X3_LAZY);
 *  - bf16 inputs (MPL_SDPA_IN16), 16 and 16: the tensor-core forward and backward (the keys'
 *    gradients in one kernel, and in two: MPL_SDPA_TC=split);
 *  - bf16 inputs, 48 and 24: the tensor-core forward, the CUDA-core backward (hv % 16 != 0).
 * A dispatcher reads the parameter array with the kernel's own types, derives the batch
 * from the grid (which must be a whole number of (batch, head, tile of 64 rows) blocks) and
 * checks that every tensor lies in device memory before it runs the grid.
 */
#include <check.h>

#include "cuda_host.h"
#include "cuda_mock.h"

#define P(t, i) (*(t *)p[i])
enum { TILE = 64 }; /* SDPA_BR = SDPA_TC_BR: rows of a block in every build */

/* The blocks of one launch: rows (T, or S for the dk/dv kernels) in tiles, per (batch,
 * head); first is the index of T in p (5 forward, 7 dq, 8 dk/dv); es the inputs' bytes. */
typedef struct SdpaShape {
  int first;
  bool kv;
  size_t es;
  int hs, hv;
} SdpaShape;

static void sdpa_check(void **p, unsigned grid, SdpaShape s) {
  long long T = P(long long, s.first), S = P(long long, s.first + 1);
  long long H = P(int, s.first + 2), Hkv = P(int, s.first + 3);
  ck_assert(T >= 1 && S >= 1 && Hkv >= 1 && H % Hkv == 0);
  long long per_batch = (s.kv ? Hkv : H) * (((s.kv ? S : T) + TILE - 1) / TILE);
  ck_assert_msg(grid % per_batch == 0, "sdpa grid %u: not whole batches of %lld blocks", grid, per_batch);
  long long B = grid / per_batch, q = B * H * T, kv = B * Hkv * S;
  cuda_mock_dev(P(void *, 0), s.es * (size_t)(q * s.hs));
  cuda_mock_dev(P(void *, 1), s.es * (size_t)(kv * s.hs));
  cuda_mock_dev(P(void *, 2), s.es * (size_t)(kv * s.hv));
  if (s.first == 5) { /* forward: out, lse */
    cuda_mock_dev(P(float *, 3), 4 * (size_t)(q * s.hv));
    cuda_mock_dev(P(float *, 4), 4 * (size_t)q);
    return;
  }
  cuda_mock_dev(P(void *, 3), s.es * (size_t)(q * s.hv));   /* out */
  cuda_mock_dev(P(float *, 4), 4 * (size_t)q);              /* lse */
  cuda_mock_dev(P(void *, 5), s.es * (size_t)(q * s.hv));   /* dout */
  if (!s.kv) {
    cuda_mock_dev(P(float *, 6), 4 * (size_t)(q * s.hs)); /* dq */
    return;
  }
  cuda_mock_dev(P(float *, 6), 4 * (size_t)(kv * s.hs)); /* dk */
  cuda_mock_dev(P(float *, 7), 4 * (size_t)(kv * s.hv)); /* dv */
}

/* A kernel's body and dispatcher, named after the build (SDPA_PFX); `call` reads p. */
#define SDPA_DISPATCH(fn, first, kv, call)                                                               \
  static void SDPA_NAME(SDPA_PFX, fn##_body)(void **p) { call; }                                         \
  static void SDPA_NAME(SDPA_PFX, fn##_run)(void **p, unsigned grid, unsigned threads) {                 \
    sdpa_check(p, grid, (SdpaShape){first, kv, sizeof(sdpa_in), HS, HV});                                \
    host_launch_params(SDPA_NAME(SDPA_PFX, fn##_body), p, grid, threads);                               \
  }

#define SDPA_CORE_DISPATCH()                                                                                          \
  SDPA_DISPATCH(fwd, 5, false,                                                                                       \
                mpl_sdpa_fwd(P(const sdpa_in *, 0), P(const sdpa_in *, 1), P(const sdpa_in *, 2), P(float *, 3),     \
                             P(float *, 4), P(long long, 5), P(long long, 6), P(int, 7), P(int, 8), P(float, 9),     \
                             P(int, 10), P(int, 11)))                                                                \
  SDPA_DISPATCH(bwd_q, 7, false,                                                                                     \
                mpl_sdpa_bwd_q(P(const sdpa_in *, 0), P(const sdpa_in *, 1), P(const sdpa_in *, 2),                  \
                               P(const sdpa_in *, 3), P(const float *, 4), P(const sdpa_in *, 5), P(float *, 6),     \
                               P(long long, 7), P(long long, 8), P(int, 9), P(int, 10), P(float, 11), P(int, 12),    \
                               P(int, 13)))                                                                          \
  SDPA_DISPATCH(bwd_kv, 8, true,                                                                                     \
                mpl_sdpa_bwd_kv(P(const sdpa_in *, 0), P(const sdpa_in *, 1), P(const sdpa_in *, 2),                 \
                                P(const sdpa_in *, 3), P(const float *, 4), P(const sdpa_in *, 5), P(float *, 6),    \
                                P(float *, 7), P(long long, 8), P(long long, 9), P(int, 10), P(int, 11),             \
                                P(float, 12), P(int, 13), P(int, 14)))

/* the tensor-core kernels take the same parameters but the last (bf16) */
/* The tensor-core kernels' three parameter lists (sdpa.cu's SDPA_TC_*_ENTRY), read from p:
   a forward's, dq's, and the keys' gradients' */
#define SDPA_TC_FWD_CALL(fn)                                                                                  \
  fn(P(const sdpa_in *, 0), P(const sdpa_in *, 1), P(const sdpa_in *, 2), P(float *, 3), P(float *, 4),       \
     P(long long, 5), P(long long, 6), P(int, 7), P(int, 8), P(float, 9), P(int, 10))
#define SDPA_TC_BWD_Q_CALL(fn)                                                                                \
  fn(P(const sdpa_in *, 0), P(const sdpa_in *, 1), P(const sdpa_in *, 2), P(const sdpa_in *, 3),              \
     P(const float *, 4), P(const sdpa_in *, 5), P(float *, 6), P(long long, 7), P(long long, 8), P(int, 9),  \
     P(int, 10), P(float, 11), P(int, 12))
#define SDPA_TC_KEYS_CALL(fn)                                                                                 \
  fn(P(const sdpa_in *, 0), P(const sdpa_in *, 1), P(const sdpa_in *, 2), P(const sdpa_in *, 3),              \
     P(const float *, 4), P(const sdpa_in *, 5), P(float *, 6), P(float *, 7), P(long long, 8),               \
     P(long long, 9), P(int, 10), P(int, 11), P(float, 12), P(int, 13))

#define SDPA_TC_FWD_DISPATCH() SDPA_DISPATCH(fwd_tc, 5, false, SDPA_TC_FWD_CALL(mpl_sdpa_fwd_tc))
#define SDPA_TC_BWD_DISPATCH()                                                                                \
  SDPA_TC_SPLIT_DISPATCH()                                                                                   \
  SDPA_DISPATCH(bwd_kv_tc, 8, true, SDPA_TC_KEYS_CALL(mpl_sdpa_bwd_kv_tc))
/* an f32 step's kernels (f32 inputs: each product as three tf32 ones); their parameters are the
   tensor-core kernels' */
#define SDPA_X3_DISPATCH()                                                                                    \
  SDPA_DISPATCH(fwd_x3, 5, false, SDPA_TC_FWD_CALL(mpl_sdpa_fwd_x3))                                         \
  SDPA_DISPATCH(bwd_q_x3, 7, false, SDPA_TC_BWD_Q_CALL(mpl_sdpa_bwd_q_x3))                                   \
  SDPA_DISPATCH(bwd_dk_x3, 8, true, SDPA_TC_KEYS_CALL(mpl_sdpa_bwd_dk_x3))                                   \
  SDPA_DISPATCH(bwd_dv_x3, 8, true, SDPA_TC_KEYS_CALL(mpl_sdpa_bwd_dv_x3))

/* dq, and dk and dv in two kernels (what a build without the one keys' kernel has: f32 inputs) */
#define SDPA_TC_SPLIT_DISPATCH()                                                                              \
  SDPA_DISPATCH(bwd_q_tc, 7, false, SDPA_TC_BWD_Q_CALL(mpl_sdpa_bwd_q_tc))                                   \
  SDPA_DISPATCH(bwd_dk_tc, 8, true, SDPA_TC_KEYS_CALL(mpl_sdpa_bwd_dk_tc))                                   \
  SDPA_DISPATCH(bwd_dv_tc, 8, true, SDPA_TC_KEYS_CALL(mpl_sdpa_bwd_dv_tc))

#define SDPA_CORE_TABLE(pfx) \
  {"mpl_sdpa_fwd", 64, pfx##_fwd_run, NULL}, {"mpl_sdpa_bwd_q", 64, pfx##_bwd_q_run, NULL}, {"mpl_sdpa_bwd_kv", 64, pfx##_bwd_kv_run, NULL}
#define SDPA_X3_TABLE(pfx)                                                                                 \
  {"mpl_sdpa_fwd_x3", 128, pfx##_fwd_x3_run, NULL}, {"mpl_sdpa_bwd_q_x3", 128, pfx##_bwd_q_x3_run, NULL},              \
      {"mpl_sdpa_bwd_dk_x3", 128, pfx##_bwd_dk_x3_run, NULL}, {"mpl_sdpa_bwd_dv_x3", 128, pfx##_bwd_dv_x3_run, NULL}
#define SDPA_TC_SPLIT_TABLE(pfx)                                                                           \
  {"mpl_sdpa_fwd_tc", 128, pfx##_fwd_tc_run, NULL}, {"mpl_sdpa_bwd_q_tc", 128, pfx##_bwd_q_tc_run, NULL},              \
      {"mpl_sdpa_bwd_dk_tc", 128, pfx##_bwd_dk_tc_run, NULL}, {"mpl_sdpa_bwd_dv_tc", 128, pfx##_bwd_dv_tc_run, NULL}

#define SDPA_PFX f32_16_8
#define MPL_SDPA_HS 16
#define MPL_SDPA_HV 8
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
SDPA_CORE_DISPATCH()
SDPA_TC_FWD_DISPATCH()
SDPA_TC_SPLIT_DISPATCH()
SDPA_X3_DISPATCH()
#include "sdpa_cu_unnames.h"

#define SDPA_PFX f32_16_16
#define MPL_SDPA_HS 16
#define MPL_SDPA_HV 16
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
SDPA_CORE_DISPATCH()
SDPA_TC_FWD_DISPATCH()
SDPA_TC_SPLIT_DISPATCH()
SDPA_X3_DISPATCH()
#include "sdpa_cu_unnames.h"

#define SDPA_PFX f32_128_128
#define MPL_SDPA_HS 128
#define MPL_SDPA_HV 128
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
SDPA_CORE_DISPATCH()
SDPA_TC_FWD_DISPATCH()
SDPA_TC_SPLIT_DISPATCH()
SDPA_X3_DISPATCH()
#include "sdpa_cu_unnames.h"

#define SDPA_PFX bf16_16_16
#define MPL_SDPA_HS 16
#define MPL_SDPA_HV 16
#define MPL_SDPA_IN16
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
SDPA_CORE_DISPATCH()
SDPA_TC_FWD_DISPATCH()
SDPA_TC_BWD_DISPATCH()
#include "sdpa_cu_unnames.h"

#define SDPA_PFX bf16_48_24
#define MPL_SDPA_HS 48
#define MPL_SDPA_HV 24
#define MPL_SDPA_IN16
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
SDPA_CORE_DISPATCH()
SDPA_TC_FWD_DISPATCH()
#include "sdpa_cu_unnames.h"

static const MockKernel f32_16_8[] = {SDPA_CORE_TABLE(f32_16_8), SDPA_TC_SPLIT_TABLE(f32_16_8), SDPA_X3_TABLE(f32_16_8)};
static const MockKernel f32_16_16[] = {SDPA_CORE_TABLE(f32_16_16), SDPA_TC_SPLIT_TABLE(f32_16_16),
                                       SDPA_X3_TABLE(f32_16_16)};
static const MockKernel f32_128_128[] = {SDPA_CORE_TABLE(f32_128_128), SDPA_TC_SPLIT_TABLE(f32_128_128),
                                         SDPA_X3_TABLE(f32_128_128)};
static const MockKernel bf16_16_16[] = {SDPA_CORE_TABLE(bf16_16_16),
                                        {"mpl_sdpa_fwd_tc", 128, bf16_16_16_fwd_tc_run, NULL},
                                        {"mpl_sdpa_bwd_q_tc", 128, bf16_16_16_bwd_q_tc_run, NULL},
                                        {"mpl_sdpa_bwd_kv_tc", 128, bf16_16_16_bwd_kv_tc_run, NULL},
                                        {"mpl_sdpa_bwd_dk_tc", 128, bf16_16_16_bwd_dk_tc_run, NULL},
                                        {"mpl_sdpa_bwd_dv_tc", 128, bf16_16_16_bwd_dv_tc_run, NULL}};
static const MockKernel bf16_48_24[] = {SDPA_CORE_TABLE(bf16_48_24), {"mpl_sdpa_fwd_tc", 128, bf16_48_24_fwd_tc_run, NULL}};

const MockSdpaBuild cuda_mock_sdpa[] = {
    {16, 8, false, f32_16_8, 11},
    {16, 16, false, f32_16_16, 11},
    {128, 128, false, f32_128_128, 11},
    {16, 16, true, bf16_16_16, 8},
    {48, 24, true, bf16_48_24, 4},
};
const int cuda_mock_nsdpa = sizeof cuda_mock_sdpa / sizeof cuda_mock_sdpa[0];
