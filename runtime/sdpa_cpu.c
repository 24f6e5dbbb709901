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

MplSdpaIsa mpl_sdpa_cpu_isa(void) {
  const char *want = getenv("MPL_CPU_SDPA");
  for (int i = 0; want && i <= MPL_SDPA_GENERIC; i++)
    if (!strcmp(want, isa_names[i]) && isa_available((MplSdpaIsa)i)) return (MplSdpaIsa)i;
  for (int i = 0; i < MPL_SDPA_GENERIC; i++)
    if (isa_available((MplSdpaIsa)i)) return (MplSdpaIsa)i;
  return MPL_SDPA_GENERIC;
}

static int64_t query_tiles(const MplSdpa *a) { return (a->T + SDPA_BR - 1) / SDPA_BR; }

int64_t mpl_sdpa_cpu_units(const MplSdpa *a, bool backward) {
  return backward ? a->B * a->Hkv : a->B * a->H * query_tiles(a);
}

/* Floats of a unit's scratch (sdpa_cpu_isa.h lays them out). */
static size_t fwd_scratch(const MplSdpa *a) {
  return (size_t)(a->hs * SDPA_BC + SDPA_BR * SDPA_BC + SDPA_BR * a->hv + 2 * SDPA_BR);
}
static size_t bwd_scratch(const MplSdpa *a) {
  return (size_t)((a->hs + a->hv) * SDPA_BC * 2 + 2 * SDPA_BR * SDPA_BC + a->H / a->Hkv * a->T);
}

/* Unit code of the chosen instruction set. */
static void fwd_unit(MplSdpaIsa isa, const MplSdpa *a, int64_t b, int64_t h, int64_t q0, int64_t nq, float *w) {
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  case MPL_SDPA_AVX512: fwd_unit_avx512(a, b, h, q0, nq, w); return;
  case MPL_SDPA_AVX2: fwd_unit_avx2(a, b, h, q0, nq, w); return;
#endif
  default: fwd_unit_generic(a, b, h, q0, nq, w); return;
  }
}

static void bwd_unit(MplSdpaIsa isa, const MplSdpa *a, int64_t b, int64_t kvh, float *w) {
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  case MPL_SDPA_AVX512: bwd_unit_avx512(a, b, kvh, w); return;
  case MPL_SDPA_AVX2: bwd_unit_avx2(a, b, kvh, w); return;
#endif
  default: bwd_unit_generic(a, b, kvh, w); return;
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
