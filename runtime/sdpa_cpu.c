/*
 * sdpa_cpu.c — the fused attention (issue 14, item 2) on the CPU: flash attention's tiles
 * in C. The forward walks the key tiles of SDPA_BC keys for each tile of SDPA_BR query rows
 * with an online softmax, and keeps the log-sum-exp of each row; the backward recomputes
 * the probabilities from it, tile by tile. No T x S buffer exists: a unit's scratch is a
 * few tiles.
 *
 * The work is cut into independent units (the forward: batch x head x query tile; the
 * backward: batch x kv head, whose unit alone writes its kv head's dk and dv and its query
 * heads' dq), which the cpu device runs over its threads as a kernel's outer iterations
 * (device_cpu.c). The tile code is sdpa_cpu_isa.h, compiled here once per instruction set
 * (AVX-512, AVX2, and plain vectors for any other CPU), chosen at run time.
 *
 * Invariants: the bits depend on neither the thread count nor the split of the units nor
 * the instruction set (sdpa_cpu_isa.h's invariant): the tile sizes are fixed, each unit's
 * sums run in a fixed order, and no two units write the same element.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"

/* Query rows and keys of a tile (fixed: they decide the online softmax's order of work). */
enum { SDPA_BR = 64, SDPA_BC = 64 };

#if defined(__x86_64__) && defined(__GNUC__)
#define ISA avx512
#define ISA_VW 16
#define ISA_MR 4
#define ISA_NB 4
#define ISA_ATTR __attribute__((target("avx512f")))
#include "sdpa_cpu_isa.h"
#undef ISA
#undef ISA_VW
#undef ISA_MR
#undef ISA_NB
#undef ISA_ATTR

#define ISA avx2
#define ISA_VW 8
#define ISA_MR 4
#define ISA_NB 2
#define ISA_ATTR __attribute__((target("avx2")))
#include "sdpa_cpu_isa.h"
#undef ISA
#undef ISA_VW
#undef ISA_MR
#undef ISA_NB
#undef ISA_ATTR
#endif

#define ISA generic
#define ISA_VW 4
#define ISA_MR 4
#define ISA_NB 2
#define ISA_ATTR
#include "sdpa_cpu_isa.h"
#undef ISA
#undef ISA_VW
#undef ISA_MR
#undef ISA_NB
#undef ISA_ATTR

static const char *const isa_names[] = {"avx512", "avx2", "generic"}; /* ORDER: MplSdpaIsa */

const char *mpl_sdpa_isa_name(MplSdpaIsa isa) { return (unsigned)isa <= MPL_SDPA_GENERIC ? isa_names[isa] : "?"; }

static bool isa_available(MplSdpaIsa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (isa == MPL_SDPA_AVX512) return __builtin_cpu_supports("avx512f");
  if (isa == MPL_SDPA_AVX2) return __builtin_cpu_supports("avx2");
#endif
  return isa == MPL_SDPA_GENERIC;
}

/* The instruction set MPL_CPU_SDPA names, or -1 (unset, empty, or not a name). */
static int isa_asked(void) {
  const char *want = getenv("MPL_CPU_SDPA");
  for (int i = 0; want && i <= MPL_SDPA_GENERIC; i++)
    if (!strcmp(want, isa_names[i])) return i;
  return -1;
}

MplSdpaIsa mpl_sdpa_cpu_isa(void) {
  int asked = isa_asked();
  if (asked >= 0 && isa_available((MplSdpaIsa)asked)) return (MplSdpaIsa)asked;
  for (int i = 0; i < MPL_SDPA_GENERIC; i++)
    if (isa_available((MplSdpaIsa)i)) return (MplSdpaIsa)i;
  return MPL_SDPA_GENERIC;
}

int mpl_sdpa_isa_env(bool *lacks, MplErr *err) {
  const char *want = getenv("MPL_CPU_SDPA");
  int asked = isa_asked();
  *lacks = asked >= 0 && !isa_available((MplSdpaIsa)asked);
  if (asked < 0 && want && *want) return mpl_errf(err, "MPL_CPU_SDPA must be avx512, avx2 or generic, not '%s'", want);
  return MPL_OK;
}

static int64_t query_tiles(const MplSdpa *a) { return (a->T + SDPA_BR - 1) / SDPA_BR; }

int64_t mpl_sdpa_cpu_units(const MplSdpa *a, bool backward) {
  return backward ? a->B * a->Hkv : a->B * a->H * query_tiles(a);
}

/* Floats of a unit's scratch (sdpa_cpu_isa.h lays them out), then, for bf16 inputs (in16),
 * room for the unit's inputs widened to f32. */
static size_t fwd_widened(const MplSdpa *a) { return a->in16 ? (size_t)(SDPA_BR * a->hs + a->S * (a->hs + a->hv)) : 0; }
static size_t bwd_widened(const MplSdpa *a) {
  return a->in16 ? (size_t)(a->H / a->Hkv * a->T * (a->hs + 2 * a->hv) + a->S * (a->hs + a->hv)) : 0;
}
static size_t fwd_scratch(const MplSdpa *a) {
  return (size_t)(a->hs * SDPA_BR + SDPA_BC * SDPA_BR + SDPA_BR * a->hv + 2 * SDPA_BR) + fwd_widened(a);
}
static size_t bwd_scratch(const MplSdpa *a) {
  return (size_t)((a->hs + a->hv) * SDPA_BC * 2 + 2 * SDPA_BR * SDPA_BC + a->H / a->Hkv * a->T) + bwd_widened(a);
}

/* (mpl.h) Here, not in gemm.c, so that the cuda-only build, which has no gemm.c, has it too. */
typedef uint32_t Words16 __attribute__((vector_size(16 * sizeof(uint32_t))));
typedef uint16_t Halves16 __attribute__((vector_size(16 * sizeof(uint16_t))));
__attribute__((target_clones("avx512f", "default"))) void mpl_bf16_widen(const uint16_t *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Halves16 h;
    memcpy(&h, x + i, sizeof h);
    Words16 w = __builtin_convertvector(h, Words16) << 16;
    memcpy(y + i, &w, sizeof w);
  }
  for (; i < n; i++) {
    uint32_t u = (uint32_t)x[i] << 16;
    memcpy(y + i, &u, sizeof u);
  }
}

/* n elements from f32 x (at offset off), or from bf16 x16 widened into *at (which moves on). */
static const float *unit_rows(const MplSdpa *a, const float *x, const uint16_t *x16, int64_t off, int64_t n, float **at) {
  if (!a->in16) return x + off;
  float *p = *at;
  mpl_bf16_widen(x16 + off, p, n);
  *at += n;
  return p;
}

/* Unit code of the chosen instruction set, on its inputs (widened at the end of w for in16). */
static void fwd_unit(MplSdpaIsa isa, const MplSdpa *a, int64_t b, int64_t h, int64_t q0, int64_t nq, float *w) {
  int64_t kvh = b * a->Hkv + h / (a->H / a->Hkv), row0 = (b * a->H + h) * a->T + q0;
  float *at = w + fwd_scratch(a) - fwd_widened(a);
  const float *q = unit_rows(a, a->q, a->q16, row0 * a->hs, nq * a->hs, &at);
  const float *k = unit_rows(a, a->k, a->k16, kvh * a->S * a->hs, a->S * a->hs, &at);
  const float *v = unit_rows(a, a->v, a->v16, kvh * a->S * a->hv, a->S * a->hv, &at);
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  case MPL_SDPA_AVX512: fwd_unit_avx512(a, b, h, q0, nq, w, q, k, v); return;
  case MPL_SDPA_AVX2: fwd_unit_avx2(a, b, h, q0, nq, w, q, k, v); return;
#endif
  default: fwd_unit_generic(a, b, h, q0, nq, w, q, k, v); return;
  }
}

static void bwd_unit(MplSdpaIsa isa, const MplSdpa *a, int64_t b, int64_t kvh, float *w) {
  int64_t G = a->H / a->Hkv, kv0 = (b * a->Hkv + kvh) * a->S, row0 = (b * a->H + kvh * G) * a->T, rows = G * a->T;
  float *at = w + bwd_scratch(a) - bwd_widened(a);
  const float *q = unit_rows(a, a->q, a->q16, row0 * a->hs, rows * a->hs, &at);
  const float *out = unit_rows(a, a->out, a->out16, row0 * a->hv, rows * a->hv, &at);
  const float *dout = unit_rows(a, a->dout, a->dout16, row0 * a->hv, rows * a->hv, &at);
  const float *k = unit_rows(a, a->k, a->k16, kv0 * a->hs, a->S * a->hs, &at);
  const float *v = unit_rows(a, a->v, a->v16, kv0 * a->hv, a->S * a->hv, &at);
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  case MPL_SDPA_AVX512: bwd_unit_avx512(a, b, kvh, w, q, k, v, out, dout); return;
  case MPL_SDPA_AVX2: bwd_unit_avx2(a, b, kvh, w, q, k, v, out, dout); return;
#endif
  default: bwd_unit_generic(a, b, kvh, w, q, k, v, out, dout); return;
  }
}

/* Units [begin, end) of the forward or the backward, with one scratch for all of them. */
static void run_units(MplSdpaRun *run, bool backward, int64_t begin, int64_t end) {
  const MplSdpa *a = &run->a;
  float *w = mpl_malloc(sizeof(float) * (backward ? bwd_scratch(a) : fwd_scratch(a)));
  if (!w) {
    atomic_store(&run->failed, 1);
    return;
  }
  int64_t nt = query_tiles(a);
  for (int64_t u = begin; u < end; u++) {
    if (backward) {
      bwd_unit(run->isa, a, u / a->Hkv, u % a->Hkv, w);
      continue;
    }
    int64_t bh = u / nt, q0 = u % nt * SDPA_BR, nq = a->T - q0 < SDPA_BR ? a->T - q0 : SDPA_BR;
    fwd_unit(run->isa, a, bh / a->H, bh % a->H, q0, nq, w);
  }
  mpl_free(w);
}

void mpl_sdpa_cpu_fwd(void **args, const int64_t *scalars, int64_t begin, int64_t end) {
  (void)scalars;
  run_units(args[0], false, begin, end);
}

void mpl_sdpa_cpu_bwd(void **args, const int64_t *scalars, int64_t begin, int64_t end) {
  (void)scalars;
  run_units(args[0], true, begin, end);
}
