/*
 * test_sdpa.c — the fused attention's kernels (issue 14, item 2) against a float64
 * reference written out here from the definition (softmax(q k^T scale, causal mask) v and
 * its gradients), on shapes that cross every tile edge: grouped-query and multi-query
 * heads, causal with T < S and T > S, one query row, head sizes of q/k and v that differ.
 *
 *  - the CPU kernels (runtime/sdpa_cpu.c) in every instruction set this CPU has: within
 *    2e-5 of the reference, and the same bits in every set and for any split of the units;
 *    bf16: within 1e-4 of a reference that rounds as the kernels do (the forward within
 *    2e-5 when the keys fit one tile, else 2^-8: the kernels round against the running max);
 *  - the CUDA kernels (runtime/cuda/sdpa.cu) compiled as C for the host: each block's
 *    threads are pthreads, __syncthreads a barrier, __shared__ arrays static; the same
 *    checks, in f32 and bf16, and for two tile sizes (head sizes 16/8 and 160/128). This is
 *    the kernels' arithmetic and indexing; the GPU run is tests/gpu/run.sh's;
 *  - inputs stored as bf16 (JobStep.in16): the same bits as the same values in f32, on the
 *    CPU and for the CUDA kernels on the host;
 *  - the tensor-core kernels through tests/unit/cuda_host.h's models of mma.sync (bf16 and
 *    tf32 operands) at head sizes 16/8, 32/16 and 128/128, against the float64 reference
 *    that rounds as they do; dk and dv in two kernels bitwise the one kernel's;
 *  - NVRTC compiles them for sm_80 and sm_90 at several head sizes, f32 and bf16 inputs, and
 *    refuses one past MPL_SDPA_MAX_HEAD with a message; ptxas (where the toolkit has it)
 *    spills no register of a tensor-core kernel.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/device.h"
#include "runtime/mpl.h"

/* ---- the CUDA kernels on the host ------------------------------------------------------ */

#include "cuda_host.h"

/* nine builds of the file: head sizes 16/8 (tiles of 32 rows), 32/16, 64/64, 128/128, 8/128
   and 160/128 (tiles of 16) with f32 inputs, the tensor-core kernels (tf32 and 3xtf32) compiled
   at all but 160; 16/8, 32/16 and 128/128 with bf16 inputs (JobStep.in16), the tensor-core kernels compiled too (the
   forward at all three, the backward at 32/16 and 128/128, which need hv % 16 == 0; at 128 the
   keys' gradients only in two kernels, and key tiles of 32) */
#define SDPA_PFX small
#define MPL_SDPA_HS 16
#define MPL_SDPA_HV 8
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"

#define SDPA_PFX big
#define MPL_SDPA_HS 160
#define MPL_SDPA_HV 128
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"

#define SDPA_PFX midf
#define MPL_SDPA_HS 32
#define MPL_SDPA_HV 16
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"

#define SDPA_PFX widef
#define MPL_SDPA_HS 128
#define MPL_SDPA_HV 128
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"

#define SDPA_PFX gpt2f
#define MPL_SDPA_HS 64
#define MPL_SDPA_HV 64
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"

#define SDPA_PFX tallv /* (x3 past 64 where only v is wide: q's shared copy 8 columns, dout's rows 128) */
#define MPL_SDPA_HS 8
#define MPL_SDPA_HV 128
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"

#define SDPA_PFX small16
#define MPL_SDPA_HS 16
#define MPL_SDPA_HV 8
#define MPL_SDPA_IN16
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"

#define SDPA_PFX mid16
#define MPL_SDPA_HS 32
#define MPL_SDPA_HV 16
#define MPL_SDPA_IN16
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"
#define SDPA_PFX wide16
#define MPL_SDPA_HS 128
#define MPL_SDPA_HV 128
#define MPL_SDPA_IN16
#include "sdpa_cu_names.h"
#include "runtime/cuda/sdpa.cu"
#include "sdpa_cu_unnames.h"
#define CU_BR 64 /* SDPA_BR: the rows of a block in every build */

typedef struct SdpaLaunch {
  const MplSdpa *a;
  int which; /* 0 forward, 1 dq, 2 dk and dv; 3, 4, 5 the same on tensor cores (bf16 inputs); 6 dk
                then dv on tensor cores in two kernels (7, 8); 9, 10, 11, 12 the forward, dq, dk
                and dv on tensor cores with tf32 operands (f32 inputs); 13-16 the same with each
                product as three tf32 ones (x3, an f32 step's) */
  int big;   /* 0 small, 1 big, 2 midf, 3 widef; with bf16 inputs 0 small16, 1 mid16, 2 wide16; for
                the tf32 kernels 0 small, 1 midf, 2 widef */
} SdpaLaunch;

static void run_kernel(void *ctx) {
  const SdpaLaunch *L = ctx;
  const MplSdpa *a = L->a;
  long long T = a->T, S = a->S;
  int H = (int)a->H, Hkv = (int)a->Hkv, causal = a->causal, bf16 = a->bf16;
  float sc = a->scale;
  int w = L->big;
  if (L->which >= 13) { /* the f32 step's (x3) of small, midf, gpt2f, widef or tallv */
    const float *q = a->q, *k = a->k, *v = a->v, *o = a->out, *d = a->dout;
#define X3_OF(n) (w == 4 ? tallv_##n : w == 3 ? widef_##n : w == 2 ? gpt2f_##n : w ? midf_##n : small_##n)
    switch (L->which) {
    case 13: X3_OF(fwd_x3)(q, k, v, a->out, a->lse, T, S, H, Hkv, sc, causal); return;
    case 14: X3_OF(bwd_q_x3)(q, k, v, o, a->lse, d, a->dq, T, S, H, Hkv, sc, causal); return;
    case 15: X3_OF(bwd_dk_x3)(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc, causal); return;
    default: X3_OF(bwd_dv_x3)(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc, causal); return;
    }
#undef X3_OF
  }
  if (L->which >= 9) { /* the tf32 tensor-core kernels of small, midf or widef */
    const float *q = a->q, *k = a->k, *v = a->v, *o = a->out, *d = a->dout;
    switch (L->which) {
    case 9: (w == 2 ? widef_fwd_tc : w ? midf_fwd_tc : small_fwd_tc)(q, k, v, a->out, a->lse, T, S, H, Hkv, sc, causal); return;
    case 10: (w == 2 ? widef_bwd_q_tc : w ? midf_bwd_q_tc : small_bwd_q_tc)(q, k, v, o, a->lse, d, a->dq, T, S, H, Hkv, sc, causal); return;
    case 11: (w == 2 ? widef_bwd_dk_tc : w ? midf_bwd_dk_tc : small_bwd_dk_tc)(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc, causal); return;
    default: (w == 2 ? widef_bwd_dv_tc : w ? midf_bwd_dv_tc : small_bwd_dv_tc)(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc, causal); return;
    }
  }
  const unsigned short *q = a->q16, *k = a->k16, *v = a->v16, *o = a->out16, *d = a->dout16;
  switch (L->which) { /* on tensor cores: the forward in every bf16 build, the backward in mid16 and wide16 */
  case 3: (w == 2 ? wide16_fwd_tc : w ? mid16_fwd_tc : small16_fwd_tc)(q, k, v, a->out, a->lse, T, S, H, Hkv, sc, causal); return;
  case 4: (w == 2 ? wide16_bwd_q_tc : mid16_bwd_q_tc)(q, k, v, o, a->lse, d, a->dq, T, S, H, Hkv, sc, causal); return;
  case 5: mid16_bwd_kv_tc(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc, causal); return;
  case 7: (w == 2 ? wide16_bwd_dk_tc : mid16_bwd_dk_tc)(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc, causal); return;
  case 8: (w == 2 ? wide16_bwd_dv_tc : mid16_bwd_dv_tc)(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc, causal); return;
  }
  if (a->in16) { /* the CUDA-core kernels with bf16 inputs, of the build L->big names */
    if (L->which == 0)
      (w == 2 ? wide16_fwd : w ? mid16_fwd : small16_fwd)(q, k, v, a->out, a->lse, T, S, H, Hkv, sc, causal, bf16);
    else if (L->which == 1)
      (w == 2 ? wide16_bwd_q : w ? mid16_bwd_q : small16_bwd_q)(q, k, v, o, a->lse, d, a->dq, T, S, H, Hkv, sc, causal, bf16);
    else
      (w == 2 ? wide16_bwd_kv : w ? mid16_bwd_kv : small16_bwd_kv)(q, k, v, o, a->lse, d, a->dk, a->dv, T, S, H, Hkv, sc,
                                                                    causal, bf16);
    return;
  }
  if (L->big >= 2) { /* the CUDA-core kernels of midf (2) and widef (3) */
    if (L->which == 0)
      (w == 3 ? widef_fwd : midf_fwd)(a->q, a->k, a->v, a->out, a->lse, T, S, H, Hkv, sc, causal, bf16);
    else if (L->which == 1)
      (w == 3 ? widef_bwd_q : midf_bwd_q)(a->q, a->k, a->v, a->out, a->lse, a->dout, a->dq, T, S, H, Hkv, sc, causal, bf16);
    else
      (w == 3 ? widef_bwd_kv : midf_bwd_kv)(a->q, a->k, a->v, a->out, a->lse, a->dout, a->dk, a->dv, T, S, H, Hkv, sc,
                                             causal, bf16);
    return;
  }
  if (L->which == 0)
    (L->big ? big_fwd : small_fwd)(a->q, a->k, a->v, a->out, a->lse, T, S, H, Hkv, sc, causal, bf16);
  else if (L->which == 1)
    (L->big ? big_bwd_q : small_bwd_q)(a->q, a->k, a->v, a->out, a->lse, a->dout, a->dq, T, S, H, Hkv, sc, causal, bf16);
  else
    (L->big ? big_bwd_kv : small_bwd_kv)(a->q, a->k, a->v, a->out, a->lse, a->dout, a->dk, a->dv, T, S, H, Hkv, sc,
                                          causal, bf16);
}

/* One launch on the grid device_cuda_progs.c gives it: CU_BR threads a block, a block per
 * (batch, head, tile of CU_BR rows). */
static void host_launch(const MplSdpa *a, int which, int big) {
  if (which == 6) { /* two launches, as device_cuda_progs.c makes them: dk (7), then dv (8) */
    host_launch(a, 7, big), host_launch(a, 8, big);
    return;
  }
  bool keys = which == 2 || which == 5 || which == 7 || which == 8 || which == 11 || which == 12 || which == 15 ||
              which == 16;
  long long rows = keys ? a->S : a->T, heads = keys ? a->Hkv : a->H;
  SdpaLaunch L = {a, which, big};
  /* the tensor-core forward: SDPA_TC_BR (= CU_BR) rows a block, two threads a row */
  host_launch_grid(a->B * heads * ((rows + CU_BR - 1) / CU_BR), which >= 3 ? 2 * CU_BR : CU_BR, run_kernel, &L);
}

/* ---- problems and the float64 reference ------------------------------------------------- */

typedef struct Case {
  int64_t B, H, Hkv, T, S, hs, hv;
  bool causal;
} Case;

typedef struct Bufs {
  float *q, *k, *v, *dout, *out, *lse, *dq, *dk, *dv;
  double *rout, *rlse, *rdq, *rdk, *rdv;
} Bufs;

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float urand(void) { /* [-1, 1) */
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

#include "guarded.h"

static float *fill(int64_t n, float amp) {
  float *p = guarded(sizeof(float) * (size_t)n);
  for (int64_t i = 0; i < n; i++) p[i] = amp * urand();
  return p;
}

/* The forward from the definition; the backward of the kernels' own out (D = dout . out,
 * as flash attention's backward defines it), with bf16: p and ds rounded to bf16 before
 * their products, as the kernels do (the forward's rounding depends on the tiles, so the
 * bf16 forward is checked against the f32 reference only, loosely). */
/* round: RND_BF16 or RND_TF32, the probabilities and ds as the tensor cores' operands (the
 * kernels' inputs are given rounded), or RND_NONE */
enum { RND_NONE, RND_BF16, RND_TF32 };
static double host_round(int round, double v) {
  return round == RND_BF16 ? host_round_bf16(v) : round == RND_TF32 ? (double)__uint_as_float(mpl_tf32((float)v)) : v;
}

static void reference_r(const Case *c, float scale, Bufs *x, int round) {
  int64_t G = c->H / c->Hkv, nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  memset(x->rdq, 0, sizeof(double) * (size_t)(nq * c->hs)); /* (the gradients are sums over rows) */
  memset(x->rdk, 0, sizeof(double) * (size_t)(nk * c->hs)), memset(x->rdv, 0, sizeof(double) * (size_t)(nk * c->hv));
  double *s = calloc((size_t)c->S, sizeof(double)), *dp = calloc((size_t)c->S, sizeof(double));
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t h = 0; h < c->H; h++)
      for (int64_t i = 0; i < c->T; i++) {
        int64_t row = (b * c->H + h) * c->T + i, kv = (b * c->Hkv + h / G) * c->S;
        int64_t seen = c->causal ? (i + 1 < c->S ? i + 1 : c->S) : c->S;
        double mx = -INFINITY, sum = 0, D = 0;
        for (int64_t e = 0; e < c->hv; e++) D += (double)x->dout[row * c->hv + e] * x->out[row * c->hv + e];
        for (int64_t j = 0; j < seen; j++) {
          double d = 0;
          for (int64_t e = 0; e < c->hs; e++) d += (double)x->q[row * c->hs + e] * x->k[(kv + j) * c->hs + e];
          s[j] = d * scale;
          if (s[j] > mx) mx = s[j];
        }
        for (int64_t j = 0; j < seen; j++) sum += s[j] = exp(s[j] - mx);
        for (int64_t e = 0; e < c->hv; e++) {
          double o = 0;
          for (int64_t j = 0; j < seen; j++) o += host_round(round, s[j]) / sum * x->v[(kv + j) * c->hv + e];
          x->rout[row * c->hv + e] = o;
        }
        x->rlse[row] = mx + log(sum);
        for (int64_t j = 0; j < seen; j++) { /* p, dp = dout . v_j */
          s[j] /= sum;
          dp[j] = 0;
          for (int64_t e = 0; e < c->hv; e++) dp[j] += (double)x->dout[row * c->hv + e] * x->v[(kv + j) * c->hv + e];
        }
        for (int64_t j = 0; j < seen; j++) {
          double ds = s[j] * (dp[j] - D);
          s[j] = host_round(round, s[j]), ds = host_round(round, ds);
          for (int64_t e = 0; e < c->hs; e++) {
            x->rdq[row * c->hs + e] += ds * scale * x->k[(kv + j) * c->hs + e];
            x->rdk[(kv + j) * c->hs + e] += ds * scale * x->q[row * c->hs + e];
          }
          for (int64_t e = 0; e < c->hv; e++) x->rdv[(kv + j) * c->hv + e] += s[j] * x->dout[row * c->hv + e];
        }
      }
  free(s);
  free(dp);
}

static void reference(const Case *c, float scale, Bufs *x, bool bf16) { reference_r(c, scale, x, bf16 ? RND_BF16 : RND_NONE); }

static void make(const Case *c, Bufs *x) {
  int64_t nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  x->q = fill(nq * c->hs, 2.0f), x->k = fill(nk * c->hs, 2.0f), x->v = fill(nk * c->hv, 1.0f);
  x->dout = fill(nq * c->hv, 1.0f);
  x->out = fill(nq * c->hv, 9.0f), x->lse = fill(nq, 9.0f); /* garbage: every element must be written */
  x->dq = fill(nq * c->hs, 9.0f), x->dk = fill(nk * c->hs, 9.0f), x->dv = fill(nk * c->hv, 9.0f);
  x->rout = calloc((size_t)(nq * c->hv), sizeof(double)), x->rlse = calloc((size_t)nq, sizeof(double));
  x->rdq = calloc((size_t)(nq * c->hs), sizeof(double)), x->rdk = calloc((size_t)(nk * c->hs), sizeof(double));
  x->rdv = calloc((size_t)(nk * c->hv), sizeof(double));
}

static void unmake(Bufs *x) {
  void *p[] = {x->q, x->k, x->v, x->dout, x->out, x->lse, x->dq, x->dk, x->dv}, *r[] = {x->rout, x->rlse, x->rdq, x->rdk, x->rdv};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) unguard(p[i]);
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) free(r[i]);
}

/* max |got - want| over max(1, max |want|) */
static double err_of(const float *got, const double *want, int64_t n) {
  double e = 0, m = 1;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs(got[i] - want[i]);
    if (!(d <= e)) e = d; /* NaN: stays NaN */
    if (fabs(want[i]) > m) m = fabs(want[i]);
  }
  return e / m;
}

static MplSdpa args_of(const Case *c, float scale, bool bf16, Bufs *x) {
  return (MplSdpa){.B = c->B, .H = c->H, .Hkv = c->Hkv, .T = c->T, .S = c->S, .hs = c->hs, .hv = c->hv,
                   .scale = scale, .causal = c->causal, .bf16 = bf16, .q = x->q, .k = x->k, .v = x->v,
                   .dout = x->dout, .out = x->out, .lse = x->lse, .dq = x->dq, .dk = x->dk, .dv = x->dv};
}

static void check_errors(const char *who, const Case *c, Bufs *x, double tol_out, double tol) {
  int64_t nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  double e[5] = {err_of(x->out, x->rout, nq * c->hv), err_of(x->lse, x->rlse, nq), err_of(x->dq, x->rdq, nq * c->hs),
                 err_of(x->dk, x->rdk, nk * c->hs), err_of(x->dv, x->rdv, nk * c->hv)};
  const char *names[5] = {"out", "lse", "dq", "dk", "dv"};
  for (int i = 0; i < 5; i++)
    ck_assert_msg(e[i] <= (i == 0 ? tol_out : tol), "%s: B%lld H%lld/%lld T%lld S%lld hs%lld hv%lld%s: %s off by %g (tolerance %g)", who,
                  (long long)c->B, (long long)c->H, (long long)c->Hkv, (long long)c->T, (long long)c->S,
                  (long long)c->hs, (long long)c->hv, c->causal ? " causal" : "", names[i], e[i], i == 0 ? tol_out : tol);
}

/* the CPU kernels, forward or backward: units [begin, end) in chunks of `chunk` (any split
   gives the same bits) */
static void cpu_pass(const MplSdpa *a, MplSdpaIsa isa, int64_t chunk, int bwd) {
  MplSdpaRun run = {.a = *a, .isa = isa};
  void *args[1] = {&run};
  int64_t n = mpl_sdpa_cpu_units(a, bwd);
  for (int64_t u = 0; u < n; u += chunk)
    (bwd ? mpl_sdpa_cpu_bwd : mpl_sdpa_cpu_fwd)(args, NULL, u, u + chunk < n ? u + chunk : n);
  ck_assert_int_eq(atomic_load(&run.failed), 0);
}

static void cpu_run(const MplSdpa *a, MplSdpaIsa isa, int64_t chunk) {
  for (int bwd = 0; bwd < 2; bwd++) cpu_pass(a, isa, chunk, bwd);
}

static const Case cases[] = {
    {2, 4, 2, 70, 70, 16, 8, true},     /* GQA, causal, two query tiles and a partial one */
    {1, 3, 1, 5, 40, 16, 8, true},      /* MQA, causal, T < S */
    {1, 2, 2, 130, 9, 16, 8, true},     /* causal, T > S: late rows see every key */
    {1, 2, 2, 130, 9, 16, 8, false},
    {2, 2, 1, 1, 33, 16, 8, false},     /* one query row */
    {1, 2, 1, 67, 150, 160, 128, true}, /* the big head sizes: tiles of 16 on the GPU */
};

START_TEST(test_cpu_kernels) {
  const Case *c = &cases[_i];
  float scale = 1.0f / sqrtf((float)c->hs);
  Bufs x;
  make(c, &x);
  MplSdpa a = args_of(c, scale, false, &x);
  int64_t nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  size_t sz[5] = {(size_t)(nq * c->hv), (size_t)nq, (size_t)(nq * c->hs), (size_t)(nk * c->hs), (size_t)(nk * c->hv)};
  float *outs[5] = {x.out, x.lse, x.dq, x.dk, x.dv}, *first[5];
  cpu_run(&a, MPL_SDPA_GENERIC, 1 << 30);
  reference(c, scale, &x, false);
  check_errors("cpu generic", c, &x, 2e-5, 2e-5);
  for (int i = 0; i < 5; i++) first[i] = malloc(sz[i] * 4), memcpy(first[i], outs[i], sz[i] * 4);
  MplSdpaIsa best = mpl_sdpa_cpu_isa();
  for (int isa = best; isa <= MPL_SDPA_GENERIC; isa++)
    for (int64_t chunk = 1; chunk <= 3; chunk += 2) {
      for (int i = 0; i < 5; i++) memset(outs[i], 0x7f, sz[i] * 4);
      cpu_run(&a, (MplSdpaIsa)isa, chunk);
      for (int i = 0; i < 5; i++)
        ck_assert_msg(!memcmp(first[i], outs[i], sz[i] * 4), "cpu %s, units in chunks of %lld: output %d differs in bits",
                      mpl_sdpa_isa_name((MplSdpaIsa)isa), (long long)chunk, i);
    }
  a.bf16 = true;
  cpu_run(&a, best, 2);
  reference(c, scale, &x, true);
  /* bf16 out: the unnormalised probabilities are rounded against the running maximum, the
     reference's against the row's; the same within one key tile (64 keys on the CPU), else
     a term may differ by a bf16 step, 2^-8 of it */
  check_errors("cpu bf16", c, &x, c->S <= 64 ? 2e-5 : 1.0 / 256, 1e-4);
  for (int i = 0; i < 5; i++) free(first[i]);
  unmake(&x);
}
END_TEST

/* A bf16 backward whose dS is a tie of bf16 rounding (pass 104: the CPU tiles' rounding with
 * its ties-to-even term dropped passed every test, random values never landing on a tie).
 * One query, one key, scale 1: s = 0, lse 0, so p = 1 exactly; dp = dout v = 1.0078125;
 * D = dout . out = -2^-8; dS = p (dp - D) = 1.01171875 = 1 + 3 * 2^-8, halfway between
 * the bf16 values 1.0078125 (odd) and 1.015625 (even): dq = dS k = 1.015625, dk = dS q = 0,
 * dv = p dout = 1, on every instruction set the CPU has. */
START_TEST(test_cpu_bf16_tie) {
  float q = 0.0f, k = 1.0f, v = 1.0078125f, out = -0.00390625f, dout = 1.0f, lse = 0.0f, dq, dk, dv;
  MplSdpa a = {.B = 1, .H = 1, .Hkv = 1, .T = 1, .S = 1, .hs = 1, .hv = 1, .scale = 1.0f, .causal = false,
               .bf16 = true, .q = &q, .k = &k, .v = &v, .dout = &dout, .out = &out, .lse = &lse,
               .dq = &dq, .dk = &dk, .dv = &dv};
  for (int isa = mpl_sdpa_cpu_isa(); isa <= MPL_SDPA_GENERIC; isa++) {
    dq = dk = dv = NAN;
    cpu_pass(&a, (MplSdpaIsa)isa, 1, 1);
    ck_assert_msg(dq == 1.015625f && dk == 0.0f && dv == 1.0f, "cpu %s: dq %.9g dk %g dv %g, want 1.015625 0 1",
                  mpl_sdpa_isa_name((MplSdpaIsa)isa), (double)dq, (double)dk, (double)dv);
  }
}
END_TEST

START_TEST(test_cuda_kernels_on_host) {
  const Case *c = &cases[_i];
  int big = c->hs == 160;
  float scale = 0.7f / sqrtf((float)c->hs);
  Bufs x;
  make(c, &x);
  MplSdpa a = args_of(c, scale, false, &x);
  for (int bf16 = 0; bf16 < 2; bf16++) {
    a.bf16 = bf16;
    host_launch(&a, 0, big);
    host_launch(&a, 1, big);
    host_launch(&a, 2, big);
    reference(c, scale, &x, bf16);
    /* key tiles of 32 (16 for the big heads): as the CPU's bf16 out, by the GPU's tile */
    double tol_out = !bf16 || c->S <= (big ? 16 : 32) ? 2e-5 : 1.0 / 256;
    check_errors(bf16 ? "cuda bf16 (on the host)" : "cuda (on the host)", c, &x, tol_out, bf16 ? 1e-4 : 2e-5);
  }
  unmake(&x);
}
END_TEST

/* A row whose scores in its first key tile are all -inf (keys of -1e38: the dot products
 * overflow) and finite after: the CUDA kernels' forward, f32 and bf16-input, gives the CPU
 * kernels' out and lse (the tile adds nothing). It gave nan: exp(-inf - -inf) while the
 * running max was still -inf. */
START_TEST(test_inf_scores_tile) {
  const Case c = {1, 1, 1, 3, 64, 16, 8, false};
  Bufs x;
  make(&c, &x);
  for (int64_t i = 0; i < c.T * c.hs; i++) x.q[i] = 1.0f;
  for (int64_t j = 0; j < 32; j++)
    for (int64_t e = 0; e < c.hs; e++) x.k[j * c.hs + e] = -1e38f;
  MplSdpa a = args_of(&c, 0.25f, false, &x);
  cpu_pass(&a, MPL_SDPA_GENERIC, 1 << 30, 0);
  float cpu_out[3 * 8], cpu_lse[3];
  memcpy(cpu_out, x.out, sizeof cpu_out), memcpy(cpu_lse, x.lse, sizeof cpu_lse);
  for (int i = 0; i < 3; i++) ck_assert_msg(isfinite(cpu_lse[i]), "cpu lse[%d] = %g", i, cpu_lse[i]);
  uint16_t *q16 = malloc(2 * 3 * 16), *k16 = malloc(2 * 64 * 16), *v16 = malloc(2 * 64 * 8);
  for (int in16 = 0; in16 < 2; in16++) {
    memset(x.out, 0x7f, sizeof cpu_out), memset(x.lse, 0x7f, sizeof cpu_lse);
    MplSdpa b = a;
    if (in16) { /* the same values (exact in bf16: 1, -1e38 rounds; the CPU read the rounded ones too) */
      for (int64_t i = 0; i < 3 * 16; i++) q16[i] = 0x3f80;
      float *srcs[2] = {x.k, x.v};
      uint16_t *dsts[2] = {k16, v16};
      int64_t ns[2] = {64 * 16, 64 * 8};
      for (int t = 0; t < 2; t++)
        for (int64_t i = 0; i < ns[t]; i++) {
          uint32_t u;
          memcpy(&u, &srcs[t][i], 4);
          dsts[t][i] = (uint16_t)(u >> 16);
          u = (uint32_t)dsts[t][i] << 16;
          memcpy(&srcs[t][i], &u, 4); /* truncated: the f32 run below reads the same values */
        }
      b.in16 = true, b.q16 = q16, b.k16 = k16, b.v16 = v16;
      MplSdpa f = a;
      cpu_pass(&f, MPL_SDPA_GENERIC, 1 << 30, 0);
      memcpy(cpu_out, x.out, sizeof cpu_out), memcpy(cpu_lse, x.lse, sizeof cpu_lse);
      memset(x.out, 0x7f, sizeof cpu_out), memset(x.lse, 0x7f, sizeof cpu_lse);
    }
    host_launch(&b, 0, 0);
    for (int i = 0; i < 3; i++)
      ck_assert_msg(fabsf(x.lse[i] - cpu_lse[i]) <= 1e-5f * fabsf(cpu_lse[i]) + 1e-5f, "%s: lse[%d] %g, cpu %g",
                    in16 ? "cuda bf16 inputs" : "cuda f32", i, x.lse[i], cpu_lse[i]);
    for (int i = 0; i < 3 * 8; i++)
      ck_assert_msg(fabsf(x.out[i] - cpu_out[i]) <= 1e-5f * fabsf(cpu_out[i]) + 1e-5f, "%s: out[%d] %g, cpu %g",
                    in16 ? "cuda bf16 inputs" : "cuda f32", i, x.out[i], cpu_out[i]);
  }
  free(q16), free(k16), free(v16);
  unmake(&x);
}
END_TEST

/* n floats rounded to bf16 in place; their bf16 bits in a new array */
static uint16_t *to_bf16(float *x, int64_t n) {
  uint16_t *y = guarded(sizeof *y * (size_t)n);
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    x[i] = (float)host_round_bf16(x[i]);
    memcpy(&u, &x[i], 4);
    y[i] = (uint16_t)(u >> 16);
  }
  return y;
}

/* A problem's inputs rounded to bf16 in place (make's), and their bf16 bits. */
typedef struct In16 {
  uint16_t *q, *k, *v, *dout;
} In16;

static In16 make16(const Case *c, Bufs *x) {
  make(c, x);
  int64_t nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  return (In16){to_bf16(x->q, nq * c->hs), to_bf16(x->k, nk * c->hs), to_bf16(x->v, nk * c->hv),
                to_bf16(x->dout, nq * c->hv)};
}

static void unmake16(In16 *b, Bufs *x) {
  unguard(b->q), unguard(b->k), unguard(b->v), unguard(b->dout);
  unmake(x);
}

/* Inputs stored as bf16 (in16, what mplc's bf16 storage gives the step): the same bits as the
 * same values in f32, on the CPU in every instruction set and for the CUDA kernels (compiled
 * as C on the host, the small head sizes), forward and backward. The backward reads the
 * forward's out rounded to bf16, as the graph's rounding of it gives. */
START_TEST(test_bf16_inputs) {
  const Case *c = &cases[_i];
  float scale = 1.0f / sqrtf((float)c->hs);
  Bufs x;
  In16 b16 = make16(c, &x);
  int64_t nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  size_t sz[5] = {(size_t)(nq * c->hv), (size_t)nq, (size_t)(nq * c->hs), (size_t)(nk * c->hs), (size_t)(nk * c->hv)};
  float *outs[5] = {x.out, x.lse, x.dq, x.dk, x.dv}, *want[5];
  for (int i = 0; i < 5; i++) want[i] = malloc(sz[i] * 4);
  /* the host-compiled in16 kernels are the small ones; one case is enough for the bits here
     (test_tensor_core_forward runs them on more shapes against the reference) */
  bool cuda = c->hs == 16 && _i == 0;
  for (int dev = 0; dev < (cuda ? 2 : 1); dev++) {
    MplSdpa a = args_of(c, scale, true, &x);
    /* f32 inputs: the forward, out rounded, the backward */
    if (dev) host_launch(&a, 0, 0);
    else cpu_pass(&a, MPL_SDPA_GENERIC, 1 << 30, 0);
    memcpy(want[0], x.out, sz[0] * 4), memcpy(want[1], x.lse, sz[1] * 4);
    uint16_t *out16 = to_bf16(x.out, nq * c->hv);
    if (dev) host_launch(&a, 1, 0), host_launch(&a, 2, 0);
    else cpu_pass(&a, MPL_SDPA_GENERIC, 1 << 30, 1);
    for (int i = 2; i < 5; i++) memcpy(want[i], outs[i], sz[i] * 4);
    /* bf16 inputs, every instruction set on the CPU */
    a.in16 = true, a.q16 = b16.q, a.k16 = b16.k, a.v16 = b16.v, a.out16 = out16, a.dout16 = b16.dout;
    for (int isa = dev ? MPL_SDPA_GENERIC : mpl_sdpa_cpu_isa(); isa <= MPL_SDPA_GENERIC; isa++) {
      for (int i = 0; i < 5; i++) memset(outs[i], 0x7f, sz[i] * 4);
      if (dev) host_launch(&a, 0, 0), host_launch(&a, 1, 0), host_launch(&a, 2, 0);
      else cpu_run(&a, (MplSdpaIsa)isa, 2);
      for (int i = 0; i < 5; i++)
        ck_assert_msg(!memcmp(want[i], outs[i], sz[i] * 4), "%s: bf16 inputs: output %d differs in bits from f32 ones",
                      dev ? "cuda (on the host)" : mpl_sdpa_isa_name((MplSdpaIsa)isa), i);
    }
    unguard(out16);
  }
  for (int i = 0; i < 5; i++) free(want[i]);
  unmake16(&b16, &x);
}
END_TEST

/* The tensor-core forward (mma.m16n8k16 through tests/unit/cuda_host.h's model of its
 * fragments) against the float64 reference that rounds as the kernels do, over the tile
 * edges of queries (64 a block), keys (64 a tile), k chunks (16) and output fragments (8):
 * out within 2e-5 when the keys fit one tile, else 2^-8 (rounded against the running
 * maximum), lse within 1e-5; and the CUDA-core kernel's out within the same bounds. */
static const Case tc_cases[] = {
    {2, 4, 2, 70, 70, 16, 8, true},    {1, 3, 1, 5, 40, 16, 8, true},   {2, 2, 1, 1, 33, 16, 8, false},
    {1, 2, 1, 100, 150, 32, 16, true}, {2, 2, 2, 65, 129, 32, 16, false}, {1, 4, 1, 64, 64, 32, 16, true},
    {1, 2, 2, 130, 9, 32, 16, true},  {1, 2, 1, 70, 70, 128, 128, true}, {2, 2, 2, 33, 100, 128, 128, false},
};

START_TEST(test_tensor_core_forward) {
  const Case *c = &tc_cases[_i];
  int mid = c->hs == 128 ? 2 : c->hs == 32; /* the build: small16, mid16 or wide16 (its backward in two kernels alone) */
  float scale = 1.0f / sqrtf((float)c->hs);
  Bufs x;
  In16 b16 = make16(c, &x);
  int64_t nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  MplSdpa a = args_of(c, scale, true, &x);
  a.in16 = true, a.q16 = b16.q, a.k16 = b16.k, a.v16 = b16.v, a.dout16 = b16.dout;
  host_launch(&a, 3, mid);
  reference(c, scale, &x, true);
  double tol_out = c->S <= (mid == 2 ? 32 : 64) ? 2e-5 : 1.0 / 256; /* one key tile */
  double eo = err_of(x.out, x.rout, nq * c->hv), el = err_of(x.lse, x.rlse, nq);
  ck_assert_msg(eo <= tol_out && el <= 1e-5, "tensor cores: B%lld H%lld/%lld T%lld S%lld hs%lld hv%lld%s: out off by %g, lse by %g",
                (long long)c->B, (long long)c->H, (long long)c->Hkv, (long long)c->T, (long long)c->S, (long long)c->hs,
                (long long)c->hv, c->causal ? " causal" : "", eo, el);
  /* the CUDA-core kernel with bf16 inputs, on the same inputs */
  float *tc = malloc(sizeof(float) * (size_t)(nq * c->hv));
  memcpy(tc, x.out, sizeof(float) * (size_t)(nq * c->hv));
  host_launch(&a, 0, mid);
  double d = 0;
  for (int64_t i = 0; i < nq * c->hv; i++) d = fmax(d, fabs((double)tc[i] - x.out[i]));
  /* (the CUDA-core kernel rounds against the maximum of key tiles of 32, or 16 at 128) */
  ck_assert_msg(d <= (c->S <= (mid == 2 ? 16 : 32) ? 2e-5 : 1.0 / 256), "tensor cores against the CUDA-core kernel: %g", d);
  free(tc);
  /* and its backward (bf16 inputs, the rounded out) against the reference */
  uint16_t *out16 = to_bf16(x.out, nq * c->hv);
  a.out16 = out16;
  reference(c, scale, &x, true);
  host_launch(&a, 1, mid), host_launch(&a, 2, mid);
  double e[3] = {err_of(x.dq, x.rdq, nq * c->hs), err_of(x.dk, x.rdk, nk * c->hs), err_of(x.dv, x.rdv, nk * c->hv)};
  for (int i = 0; i < 3; i++) ck_assert_msg(e[i] <= 1e-4, "bf16 inputs, CUDA-core backward: d%s off by %g", "qkv" + i, e[i]);
  if (mid) { /* the tensor-core backward: the same bound */
    memset(x.dq, 0x7f, sizeof(float) * (size_t)(nq * c->hs)), memset(x.dk, 0x7f, sizeof(float) * (size_t)(nk * c->hs));
    memset(x.dv, 0x7f, sizeof(float) * (size_t)(nk * c->hv));
    host_launch(&a, 4, mid), host_launch(&a, mid == 2 ? 6 : 5, mid);
    double et[3] = {err_of(x.dq, x.rdq, nq * c->hs), err_of(x.dk, x.rdk, nk * c->hs), err_of(x.dv, x.rdv, nk * c->hv)};
    for (int i = 0; i < 3; i++)
      ck_assert_msg(et[i] <= 1e-4, "tensor-core backward: B%lld H%lld/%lld T%lld S%lld%s: d%s off by %g", (long long)c->B,
                    (long long)c->H, (long long)c->Hkv, (long long)c->T, (long long)c->S, c->causal ? " causal" : "",
                    "qkv" + i, et[i]);
    /* dk and dv in two kernels (the device's past head size 64): the same bits (wide16 has only those) */
    if (mid != 2) {
      size_t bk = sizeof(float) * (size_t)(nk * c->hs), bv = sizeof(float) * (size_t)(nk * c->hv);
      float *dk1 = malloc(bk), *dv1 = malloc(bv);
      memcpy(dk1, x.dk, bk), memcpy(dv1, x.dv, bv);
      memset(x.dk, 0x7f, bk), memset(x.dv, 0x7f, bv);
      host_launch(&a, 6, 1);
      ck_assert_msg(!memcmp(dk1, x.dk, bk) && !memcmp(dv1, x.dv, bv), "tensor cores: dk and dv in two kernels differ in bits "
                    "from one kernel's (B%lld T%lld S%lld%s)", (long long)c->B, (long long)c->T, (long long)c->S,
                    c->causal ? " causal" : "");
      free(dk1), free(dv1);
    }
  }
  unguard(out16);
  unmake16(&b16, &x);
}
END_TEST

/* The tensor-core kernels with tf32 operands (f32 inputs; a tf32 step), through the host model
 * of mma.m16n8k8 (which refuses an operand that is not a tf32 value), against the float64
 * reference on inputs rounded to tf32 that rounds p and ds as the kernels do: out within
 * 2^-10 (a probability's tf32 rounding may go the other way from the reference's, whose
 * scores are summed in float64, and is against the running maximum), the rest within 4e-4
 * (such a rounding moves a gradient by up to 2^-11 of a term: 1.6e-4 seen at head size 8;
 * a wrong index moves it by its whole size).
 * And against the f32 reference on the unrounded inputs, loosely (2e-3): what a tf32 step's
 * attention gives for f32 values; there the same build's CUDA-core kernels within 2e-5. */
START_TEST(test_tf32_tensor_cores) {
  const Case *c = &tc_cases[_i];
  int w = c->hs == 128 ? 2 : c->hs == 32; /* the build: small, midf or widef */
  float scale = 1.0f / sqrtf((float)c->hs);
  Bufs x;
  make(c, &x);
  int64_t nq = c->B * c->H * c->T, nk = c->B * c->Hkv * c->S;
  for (int loose = 0; loose < 2; loose++) {
    float *in[4] = {x.q, x.k, x.v, x.dout}, *kept[4];
    int64_t n[4] = {nq * c->hs, nk * c->hs, nk * c->hv, nq * c->hv};
    for (int i = 0; i < 4; i++) { /* round the inputs (the first pass), keeping the f32 ones */
      kept[i] = malloc(sizeof(float) * (size_t)n[i]);
      memcpy(kept[i], in[i], sizeof(float) * (size_t)n[i]);
      for (int64_t e = 0; !loose && e < n[i]; e++) in[i][e] = __uint_as_float(mpl_tf32(in[i][e]));
    }
    MplSdpa a = args_of(c, scale, false, &x);
    host_launch(&a, 9, w);
    reference_r(c, scale, &x, loose ? RND_NONE : RND_TF32);
    host_launch(&a, 10, w), host_launch(&a, 11, w), host_launch(&a, 12, w);
    check_errors(loose ? "tf32 tensor cores, f32 inputs" : "tf32 tensor cores", c, &x, loose ? 2e-3 : 1.0 / 1024,
                 loose ? 2e-3 : 4e-4);
    if (loose && w) { /* the same build's CUDA-core kernels (an f32 step's) on the f32 inputs: within 2e-5 */
      host_launch(&a, 0, w + 1);
      reference_r(c, scale, &x, RND_NONE); /* (its backward reads the kernel's out) */
      host_launch(&a, 1, w + 1), host_launch(&a, 2, w + 1);
      check_errors("cuda cores, f32", c, &x, 2e-5, 2e-5);
    }
    for (int i = 0; i < 4; i++) memcpy(in[i], kept[i], sizeof(float) * (size_t)n[i]), free(kept[i]);
  }
  unmake(&x);
}
END_TEST

/* An f32 step's tensor-core kernels (each product as three tf32 ones: x3), through the host
 * model of mma.m16n8k8 (every part a tf32 value), against the float64 reference on the f32
 * inputs: within 2e-5, as the CUDA-core kernels are. Past head size 64 a warp's rows of q (k)
 * are read from a shared copy, of dout (v) from global memory, a chunk at a time
 * (SDPA_X3_LAZY): Llama's 128 below (and tc_cases' two), as GPT-2's 64. */
static const Case x3_cases[] = { /* GPT-2's head size, where the split operands fill the registers, and Llama's */
    {1, 2, 1, 37, 53, 64, 64, true},    {1, 2, 2, 130, 9, 64, 64, true},    {1, 2, 2, 1, 33, 64, 64, false},
    {1, 4, 2, 37, 53, 128, 128, true}, {1, 2, 1, 130, 9, 128, 128, true}, {1, 2, 2, 1, 33, 128, 128, false},
    {1, 2, 1, 37, 53, 8, 128, true},    {1, 3, 1, 130, 9, 8, 128, false},
};

START_TEST(test_f32_x3_tensor_cores) {
  int ntc = (int)(sizeof tc_cases / sizeof tc_cases[0]);
  const Case *c = _i < ntc ? &tc_cases[_i] : &x3_cases[_i - ntc];
  int w = c->hv == 128 && c->hs == 8 ? 4 : c->hs == 128 ? 3 : c->hs == 64 ? 2 : c->hs == 32; /* the build: small, midf, gpt2f, widef or tallv */
  float scale = 1.0f / sqrtf((float)c->hs);
  Bufs x;
  make(c, &x);
  MplSdpa a = args_of(c, scale, false, &x);
  host_launch(&a, 13, w);
  reference_r(c, scale, &x, RND_NONE); /* (its backward reads the kernel's out) */
  host_launch(&a, 14, w), host_launch(&a, 15, w), host_launch(&a, 16, w);
  check_errors("f32 on tensor cores (3xtf32)", c, &x, 2e-5, 2e-5);
  unmake(&x);
}
END_TEST

/* The same with an infinite value in v (non-causal: every row sees its key): out non-finite in
 * its column, as the CUDA-core kernels' (3xtf32 gives NaN there, not inf: the operand's rest
 * is inf - inf), and within 2e-5 of theirs in every other column. */
START_TEST(test_f32_x3_inf_value) {
  const Case c = {1, 2, 1, 20, 24, 16, 8, false};
  Bufs x;
  make(&c, &x);
  x.v[5 * c.hv] = INFINITY;
  int64_t n = c.B * c.H * c.T * c.hv;
  MplSdpa a = args_of(&c, 0.25f, false, &x);
  host_launch(&a, 0, 0); /* the CUDA-core forward (small) */
  float *want = malloc(sizeof(float) * (size_t)n);
  memcpy(want, x.out, sizeof(float) * (size_t)n);
  host_launch(&a, 13, 0);
  for (int64_t i = 0; i < n; i++) {
    double w = want[i], g = x.out[i];
    bool same = i % c.hv == 0 ? !isfinite(w) && !isfinite(g) : isfinite(g) && fabs(g - w) <= 2e-5 * fmax(1.0, fabs(w));
    ck_assert_msg(same, "3xtf32 with an inf in v: out[%lld] = %g, the CUDA cores' %g", (long long)i, g, w);
  }
  free(want);
  unmake(&x);
}
END_TEST

/* ptxas (the toolkit's: $CUDA_HOME/bin, else /usr/local/cuda/bin) on ptx for sm, its entries
 * `entries` (ptxas -e: the others would take seconds): each one's registers and bytes of spill
 * stores, n of them at most; -1 when there is no ptxas. */
typedef struct PtxasFn {
  char name[48];
  int regs, spills;
} PtxasFn;

static int ptxas_info(const char *ptx, const char *sm, const char *entries, PtxasFn *fn, int n) {
  const char *home = getenv("CUDA_HOME");
  char tool[512], path[] = "/tmp/mpl_sdpa_ptx_XXXXXX", cmd[1200], line[512];
  snprintf(tool, sizeof tool, "%s/bin/ptxas", home && home[0] ? home : "/usr/local/cuda");
  if (access(tool, X_OK) != 0) return -1;
  int fd = mkstemp(path);
  ck_assert(fd >= 0);
  size_t len = strlen(ptx);
  ck_assert(write(fd, ptx, len) == (ssize_t)len);
  close(fd);
  snprintf(cmd, sizeof cmd, "'%s' -arch=%s -v %s '%s' -o /dev/null 2>&1", tool, sm, entries, path);
  FILE *f = popen(cmd, "r");
  ck_assert(f != NULL);
  int k = -1;
  while (fgets(line, sizeof line, f)) {
    const char *p = strstr(line, "Function properties for ");
    int a;
    if (p && k + 1 < n) {
      k++;
      snprintf(fn[k].name, sizeof fn[k].name, "%s", p + strlen("Function properties for "));
      fn[k].name[strcspn(fn[k].name, "\n")] = 0;
      fn[k].regs = fn[k].spills = -1;
    } else if (k >= 0 && (p = strstr(line, "bytes stack frame, ")) && sscanf(p + 19, "%d bytes spill stores", &a) == 1) {
      fn[k].spills = a;
    } else if (k >= 0 && (p = strstr(line, "Used ")) && sscanf(p + 5, "%d registers", &a) == 1) {
      fn[k].regs = a;
    }
  }
  int rc = pclose(f);
  unlink(path);
  ck_assert_msg(rc == 0, "ptxas -arch=%s failed (exit %d)", sm, rc);
  return k + 1;
}

/* NVRTC compiles the kernels for sm_90 at the head sizes of GPT-2 (64), Llama (128), the
 * largest fused (256) and an odd pair, and for sm_80 at 128, without a word in the log; on tensor cores
 * for bf16 inputs up to 128, and there ptxas (where the toolkit has it) spills no register of
 * them (at 128 the keys' gradients in one kernel spilled 652 bytes on sm_90: there they are
 * two kernels, and the forward's key tiles are 32). */
START_TEST(test_nvrtc_compiles_kernels) {
#ifndef MPL_HAVE_CUDA
  printf("note: built without CUDA; the attention kernels are not compiled\n");
#else
  const char *const archs[] = {"compute_80", "compute_90"};
  const struct {
    int hs, hv;
    bool in16;
  } heads[] = {{64, 64, true},  {64, 64, false}, {128, 128, true},
               {128, 128, false}, {MPL_SDPA_MAX_HEAD, MPL_SDPA_MAX_HEAD, true}, {24, 40, false}};
  int nheads = (int)(sizeof heads / sizeof heads[0]);
  for (int a = 0; a < 2; a++)
    for (int h = 0; h < nheads; h++) {
      char *ptx = NULL, log[4096];
      MplErr err = {{0}};
      bool in16 = heads[h].in16;
      if (a == 0 && heads[h].hs != 128 && !(heads[h].hs == 64 && !heads[h].in16))
        continue; /* compute_80: the builds ptxas checks there (NVRTC takes seconds a build) */
      ck_assert_msg(mpl_cuda_sdpa_compile(archs[a], heads[h].hs, heads[h].hv, in16, &ptx, log, sizeof log, &err) == MPL_OK,
                    "%s", err.msg);
      ck_assert_msg(log[0] == 0, "NVRTC said, for %s: %s", archs[a], log);
      /* on tensor cores: head sizes up to 128, forward and backward (bf16 inputs: multiples of
         16, tf32 operands for f32 ones: of 8); the keys' gradients in one kernel for bf16 up to
         64, in two (and also) everywhere */
      int hs = heads[h].hs, hv = heads[h].hv;
      bool tc = hs <= 128 && hv <= 128 && (in16 ? hs % 16 == 0 && hv % 16 == 0 : hs % 8 == 0 && hv % 8 == 0);
      bool one = tc && in16 && hs <= 64 && hv <= 64, x3 = tc && !in16;
      const struct {
        const char *name;
        bool want;
      } entries[] = {{"mpl_sdpa_fwd", true},          {"mpl_sdpa_bwd_q", true},     {"mpl_sdpa_bwd_kv", true},
                     {"mpl_sdpa_fwd_tc", tc},         {"mpl_sdpa_bwd_q_tc", tc},    {"mpl_sdpa_bwd_kv_tc", one},
                     {"mpl_sdpa_bwd_dk_tc", tc},      {"mpl_sdpa_bwd_dv_tc", tc},   {"mpl_sdpa_fwd_x3", x3},
                     {"mpl_sdpa_bwd_q_x3", x3},       {"mpl_sdpa_bwd_dk_x3", x3},   {"mpl_sdpa_bwd_dv_x3", x3}};
      ck_assert_msg(!tc || strstr(ptx, in16 ? "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
                                            : "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"),
                    "no mma.sync in the PTX");
      char tc_entries[512] = "";
      for (int e = 0; e < (int)(sizeof entries / sizeof entries[0]); e++) {
        char entry[64];
        if (entries[e].want && (strstr(entries[e].name, "_tc") || strstr(entries[e].name, "_x3")))
          snprintf(tc_entries + strlen(tc_entries), sizeof tc_entries - strlen(tc_entries), " -e %s", entries[e].name);
        snprintf(entry, sizeof entry, ".entry %s(", entries[e].name);
        ck_assert_msg(!strstr(ptx, entry) == !entries[e].want, "%s, head sizes %d/%d%s: %s %s in the PTX", archs[a],
                      heads[h].hs, heads[h].hv, in16 ? " bf16" : "", entries[e].name, entries[e].want ? "not" : "unwanted");
      }
      /* the tensor-core kernels' registers: no spill (ptxas takes a second or two a build: sm_90
         at 64, both at 128) */
      if (tc && (hs == 128 || a == 1 || !in16)) {
        PtxasFn fn[16];
        char sm[16], line[512] = "";
        snprintf(sm, sizeof sm, "sm_%s", archs[a] + strlen("compute_"));
        int n = ptxas_info(ptx, sm, tc_entries, fn, 16);
        if (n < 0) {
          printf("note: no ptxas here (set CUDA_HOME): the kernels' registers are not checked\n");
        } else {
          ck_assert_int_eq(n, 5 - !one + 4 * x3);
          int spilt = -1; /* the first that spilled: after the line that shows them all */
          for (int i = 0; i < n; i++) {
            size_t l = strlen(line);
            snprintf(line + l, sizeof line - l, " %s %d/%d", fn[i].name + strlen("mpl_sdpa_"), fn[i].regs, fn[i].spills);
            ck_assert_msg(fn[i].regs > 0 && fn[i].spills >= 0, "ptxas said nothing of %s", fn[i].name);
            if (fn[i].spills && spilt < 0) spilt = i;
          }
          printf("ptxas %s, head size %d, %s inputs (registers/bytes spilled):%s\n", sm, hs, in16 ? "bf16" : "f32", line);
          fflush(stdout);
          ck_assert_msg(spilt < 0, "%s, head size %d%s, %s: %d bytes of registers spilled", fn[spilt < 0 ? 0 : spilt].name,
                        hs, in16 ? " bf16" : "", sm, fn[spilt < 0 ? 0 : spilt].spills);
        }
      }
      mpl_free(ptx);
    }
  char *ptx = NULL, log[64];
  MplErr err = {{0}};
  ck_assert(mpl_cuda_sdpa_compile("compute_90", MPL_SDPA_MAX_HEAD + 1, 64, false, &ptx, log, sizeof log, &err) == MPL_ERR);
  ck_assert_msg(strstr(err.msg, "head sizes up to 256") && !ptx, "%s", err.msg);
#endif
}
END_TEST

static Suite *sdpa_suite(void) {
  /* three cases: "cpu" the CPU's kernels, "host" the CUDA kernels run on the host (what
     tests/e2e/fiber_orders.sh runs again in other thread orders), "nvrtc" their compilation */
  Suite *s = suite_create("sdpa");
  TCase *cpu = tcase_create("cpu");
  tcase_set_timeout(cpu, 120);
  int n = (int)(sizeof cases / sizeof cases[0]);
  tcase_add_loop_test(cpu, test_cpu_kernels, 0, n);
  tcase_add_test(cpu, test_cpu_bf16_tie);
  suite_add_tcase(s, cpu);
  TCase *tc = tcase_create("host");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_cuda_kernels_on_host, 0, n);
  tcase_add_loop_test(tc, test_bf16_inputs, 0, n);
  tcase_add_loop_test(tc, test_tensor_core_forward, 0, (int)(sizeof tc_cases / sizeof tc_cases[0]));
  tcase_add_loop_test(tc, test_tf32_tensor_cores, 0, (int)(sizeof tc_cases / sizeof tc_cases[0]));
  tcase_add_loop_test(tc, test_f32_x3_tensor_cores, 0,
                      (int)(sizeof tc_cases / sizeof tc_cases[0] + sizeof x3_cases / sizeof x3_cases[0]));
  tcase_add_test(tc, test_f32_x3_inf_value);
  tcase_add_test(tc, test_inf_scores_tile);
  suite_add_tcase(s, tc);
  TCase *nv = tcase_create("nvrtc");
  tcase_set_timeout(nv, 300); /* about 30 s alone on a Zen 4; past 120 s with four other jobs on two cores */
  tcase_add_test(nv, test_nvrtc_compiles_kernels);
  suite_add_tcase(s, nv);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(sdpa_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
