/*
 * test_optim_cu.c — runtime/cuda/optim.cu, the optimizer's CUDA kernels, run on the host
 * (tests/unit/cuda_host.h) with the tensor lists runtime/optim.c fills for them:
 *  - AdamW, one tensor at a time (mpl_adamw) and over a list (mpl_adamw_list, a weight
 *    decay per tensor, both of lerp's formulas, steps 1 and 7): params and both moments the
 *    bits of optim.c's mpl_adamw_update;
 *  - SGD (no momentum, its first step, later steps), single (mpl_sgd) and listed
 *    (mpl_sgd_list, the mode per tensor as cuda_sgd_list sets it): mpl_sgd_update's bits;
 *  - gradient scaling, single and listed: the bits of mpl_scale_f32;
 *  - sums of squares: a listed tensor's sum is its single launch's, bit for bit, with the
 *    parts capped or not; both within 1e-12 of optim.c's element-order sum;
 *  - the list's layout: MplList (the kernels') and MplOptList (the host's) agree in size and
 *    length; an empty tensor (n = 0) gets one block that writes nothing (sum 0).
 * Sizes cross the 256-thread blocks and the 4096-element parts: 1, 255, 256, 1000, 4097,
 * 9000, 0.
 */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "runtime/exec.h"
#include "tests/unit/cuda_host.h"
#include "runtime/cuda/optim.cu"

enum { NT = 7, PER_PART = 256 * 16 };
static const int64_t sizes[NT] = {1, 255, 256, 1000, 4097, 9000, 0};

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(float lo, float hi) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return lo + (hi - lo) * (float)((rng >> 40) / 16777216.0);
}
/* Every tensor is n floats and a sentinel after them, which no kernel may write (pass 99: a
 * grid-stride loop's `i <= n` wrote one float past p, g, m and v, and nothing saw it). */
static const uint32_t SENTINEL = 0x4EADBEEFu; /* (finite: a NaN would come back from a NaN sum unchanged) */
static void set_sentinel(float *x, int64_t n) { memcpy(x + n, &SENTINEL, sizeof SENTINEL); }
static void check_sentinel(const float *x, int64_t n, const char *what) {
  uint32_t u;
  memcpy(&u, x + n, sizeof u);
  ck_assert_msg(u == SENTINEL, "%s[%lld] (one past its end) was written: %08x", what, (long long)n, u);
}
static float *filled(int64_t n, float lo, float hi) {
  float *x = malloc(sizeof(float) * (size_t)(n + 1));
  ck_assert_ptr_nonnull(x);
  for (int64_t i = 0; i < n; i++) x[i] = frand(lo, hi);
  set_sentinel(x, n);
  return x;
}
static float *copy_of(const float *x, int64_t n) {
  float *y = malloc(sizeof(float) * (size_t)(n + 1));
  ck_assert_ptr_nonnull(y);
  memcpy(y, x, sizeof(float) * (size_t)n);
  set_sentinel(y, n);
  return y;
}

/* ---- launches: a kernel's arguments in a struct, each thread calling it ---------------- */

typedef struct Launch {
  int which; /* 0 adamw, 1 adamw_list, 2 scale, 3 scale_list, 4 sumsq, 5 sumsq_final, 6 sumsq_list, 7 sumsq_final_list */
  MplList L;
  const MplOptTensor *t; /* the list's tensors (fill), for their sentinels */
  int k;
  MplAdamWScalars s;
  float *p, *g, *m, *v, coef;
  long long n;
  int nparts;
  double *partial, *out;
} Launch;

static void run_kernel(void *ctx) {
  Launch *a = ctx;
  const MplAdamWScalars *s = &a->s;
  switch (a->which) {
  case 8: mpl_sgd(a->p, a->g, a->m, a->n, a->coef, a->s.w1, a->nparts); break;
  case 9: mpl_sgd_list(a->L, a->coef, a->s.w1); break;
  case 0: mpl_adamw(a->p, a->g, a->m, a->v, a->n, s->decay, s->w1, s->b2, s->w2, s->neg_step, s->bc2_sqrt, s->eps, s->do_decay, s->small); break;
  case 1: mpl_adamw_list(a->L, s->w1, s->b2, s->w2, s->neg_step, s->bc2_sqrt, s->eps, s->small); break;
  case 2: mpl_scale(a->g, a->n, a->coef); break;
  case 3: mpl_scale_list(a->L, a->coef); break;
  case 4: mpl_sumsq(a->g, a->n, a->partial); break;
  case 5: mpl_sumsq_final(a->partial, a->nparts, a->out); break;
  case 6: mpl_sumsq_list(a->L, a->partial); break;
  case 7: mpl_sumsq_final_list(a->L, a->partial); break;
  }
}


/* The launch, then the sentinels of the tensors it was given. */
static void launch(Launch *a, long long blocks) {
  host_launch_grid(blocks, 256, run_kernel, a);
  static const char *const names[] = {"p", "g", "m", "v"};
  if (a->which == 0 || a->which == 2 || a->which == 4 || a->which == 8) {
    float *single[] = {a->p, a->g, a->m, a->v};
    for (int k = 0; k < 4; k++)
      if (single[k]) check_sentinel(single[k], a->n, names[k]);
  }
  for (int i = 0; i < a->k; i++) { /* a list's */
    float *listed[] = {a->t[i].p, a->t[i].g, a->t[i].m, a->t[i].v};
    for (int k = 0; k < 4; k++)
      if (listed[k]) check_sentinel(listed[k], a->t[i].n, names[k]);
  }
}

/* The host's list (runtime/optim.c) as the kernels' parameter (sizes checked below). */
static long long fill(Launch *a, const MplOptTensor *t, int k, int64_t per_block, int64_t cap) {
  MplOptList h;
  long long blocks = mpl_opt_list_fill(&h, t, k, per_block, cap);
  memcpy(&a->L, &h, sizeof a->L);
  a->t = t, a->k = k;
  return blocks;
}

START_TEST(test_list_layout) {
  ck_assert_uint_eq(sizeof(MplList), sizeof(MplOptList));
  ck_assert_int_eq(MPL_LIST, MPL_OPT_LIST);
  ck_assert_int_eq(MPL_LIST_ROW, MPL_OPT_ROW);
  MplOptTensor t[3] = {{.g = (float *)16, .n = 5000}, {.g = (float *)32, .n = 0}, {.g = (float *)48, .n = 256}};
  MplOptList L;
  ck_assert_int_eq(mpl_opt_list_fill(&L, t, 3, 256, 8), 8 + 1 + 1); /* 5000 -> 20 blocks, capped at 8 */
  ck_assert_int_eq(L.w[0 * MPL_OPT_ROW + 5], 0);
  ck_assert_int_eq(L.w[0 * MPL_OPT_ROW + 7], 8);
  ck_assert_int_eq(L.w[1 * MPL_OPT_ROW + 5], 8);
  ck_assert_int_eq(L.w[2 * MPL_OPT_ROW + 7], 10);
  ck_assert_int_eq(L.w[MPL_OPT_LIST * MPL_OPT_ROW], 3);
  ck_assert(L.w[2 * MPL_OPT_ROW + 0] == 48 && L.w[2 * MPL_OPT_ROW + 4] == 256);
}
END_TEST

/* AdamW: optim.c's loop, the single kernel and the list kernel on the same tensors. */
static void adamw_case(double beta1, int64_t step, int64_t cap) {
  const double lr = 3e-3, beta2 = 0.95, eps = 1e-8;
  float *p[NT], *g[NT], *m[NT], *v[NT], *p1[NT], *m1[NT], *v1[NT], *p2[NT], *m2[NT], *v2[NT];
  MplOptTensor t[NT];
  for (int i = 0; i < NT; i++) {
    int64_t n = sizes[i];
    p[i] = filled(n, -1, 1), g[i] = filled(n, -0.1f, 0.1f), m[i] = filled(n, -0.05f, 0.05f), v[i] = filled(n, 0, 0.01f);
    p1[i] = copy_of(p[i], n), m1[i] = copy_of(m[i], n), v1[i] = copy_of(v[i], n);
    p2[i] = copy_of(p[i], n), m2[i] = copy_of(m[i], n), v2[i] = copy_of(v[i], n);
    double wd = i % 2 ? 0.1 : 0.0;
    mpl_adamw_update(p[i], g[i], m[i], v[i], n, lr, beta1, beta2, eps, wd, step);
    Launch a = {.which = 0, .p = p1[i], .g = g[i], .m = m1[i], .v = v1[i], .n = n};
    mpl_adamw_scalars(&a.s, lr, beta1, beta2, eps, wd, step);
    launch(&a, n / 256 + 1);
    t[i] = (MplOptTensor){.p = p2[i], .g = g[i], .m = m2[i], .v = v2[i], .n = n, .weight_decay = wd};
  }
  Launch a = {.which = 1};
  long long blocks = fill(&a, t, NT, 256, cap);
  for (int i = 0; i < NT; i++) {
    mpl_adamw_scalars(&a.s, lr, beta1, beta2, eps, t[i].weight_decay, step);
    a.L.w[i * MPL_OPT_ROW + 6] = mpl_opt_list_adamw_word(&a.s);
  }
  launch(&a, blocks);
  for (int i = 0; i < NT; i++) {
    size_t b = sizeof(float) * (size_t)sizes[i];
    ck_assert_msg(!memcmp(p[i], p1[i], b) && !memcmp(m[i], m1[i], b) && !memcmp(v[i], v1[i], b),
                  "mpl_adamw, n %lld, beta1 %g, step %lld: not optim.c's bits", (long long)sizes[i], beta1, (long long)step);
    ck_assert_msg(!memcmp(p[i], p2[i], b) && !memcmp(m[i], m2[i], b) && !memcmp(v[i], v2[i], b),
                  "mpl_adamw_list, n %lld, beta1 %g, step %lld, cap %lld: not optim.c's bits", (long long)sizes[i], beta1,
                  (long long)step, (long long)cap);
    free(p[i]), free(g[i]), free(m[i]), free(v[i]), free(p1[i]), free(m1[i]), free(v1[i]), free(p2[i]), free(m2[i]), free(v2[i]);
  }
}

START_TEST(test_adamw) {
  adamw_case(0.9, 1, 1 << 20);
  adamw_case(0.9, 7, 3);   /* a grid-stride over a tensor's few blocks */
  adamw_case(0.2, 7, 1 << 20); /* lerp's other formula (|1 - beta1| >= 0.5) */
}
END_TEST

/* SGD's three modes (no momentum; the first step; later steps): optim.c's bits. */
START_TEST(test_sgd) {
  const double lr = 0.05, mom = 0.9;
  for (int mode = 0; mode < 3; mode++)
    for (int i = 0; i < NT; i++) {
      int64_t n = sizes[i];
      float *p = filled(n, -1, 1), *g = filled(n, -0.1f, 0.1f), *b = filled(n, -0.1f, 0.1f);
      float *p1 = copy_of(p, n), *b1 = copy_of(b, n);
      mpl_sgd_update(p, g, mode ? b : NULL, n, lr, mode ? mom : 0.0, mode == 1);
      Launch a = {.which = 8, .p = p1, .g = g, .m = mode ? b1 : NULL, .n = n, .coef = (float)-lr, .nparts = mode};
      a.s.w1 = (float)mom;
      launch(&a, 3);
      size_t bytes = sizeof(float) * (size_t)n;
      ck_assert_msg(!memcmp(p, p1, bytes) && (!mode || !memcmp(b, b1, bytes)), "mpl_sgd, mode %d, n %lld: not optim.c's bits",
                    mode, (long long)n);
      free(p), free(g), free(b), free(p1), free(b1);
    }
}
END_TEST

/* The list kernel over every size at once, a list per mode, the grid capped or not. */
START_TEST(test_sgd_list) {
  const double lr = 0.05, mom = 0.9;
  for (int mode = 0; mode < 3; mode++)
    for (int64_t cap = 2; cap <= (1 << 20); cap *= 1 << 19) {
      float *p[NT], *g[NT], *b[NT], *p1[NT], *b1[NT];
      MplOptTensor t[NT];
      for (int i = 0; i < NT; i++) {
        int64_t n = sizes[i];
        p[i] = filled(n, -1, 1), g[i] = filled(n, -0.1f, 0.1f), b[i] = filled(n, -0.1f, 0.1f);
        p1[i] = copy_of(p[i], n), b1[i] = copy_of(b[i], n);
        mpl_sgd_update(p[i], g[i], mode ? b[i] : NULL, n, lr, mode ? mom : 0.0, mode == 1);
        t[i] = (MplOptTensor){.p = p1[i], .g = g[i], .m = mode ? b1[i] : NULL, .n = n};
      }
      Launch a = {.which = 9, .coef = (float)-lr};
      a.s.w1 = (float)mom;
      long long blocks = fill(&a, t, NT, 256, cap);
      for (int i = 0; i < NT; i++) a.L.w[i * MPL_OPT_ROW + 6] = mode;
      launch(&a, blocks);
      for (int i = 0; i < NT; i++) {
        size_t bytes = sizeof(float) * (size_t)sizes[i];
        ck_assert_msg(!memcmp(p[i], p1[i], bytes) && (!mode || !memcmp(b[i], b1[i], bytes)),
                      "mpl_sgd_list, mode %d, n %lld, cap %lld: not optim.c's bits", mode, (long long)sizes[i],
                      (long long)cap);
        free(p[i]), free(g[i]), free(b[i]), free(p1[i]), free(b1[i]);
      }
    }
}
END_TEST

START_TEST(test_scale) {
  float *g[NT], *g1[NT], *g2[NT];
  MplOptTensor t[NT];
  for (int i = 0; i < NT; i++) {
    g[i] = filled(sizes[i], -2, 2), g1[i] = copy_of(g[i], sizes[i]), g2[i] = copy_of(g[i], sizes[i]);
    mpl_scale_f32(g[i], sizes[i], 0.3712f);
    Launch a = {.which = 2, .g = g1[i], .n = sizes[i], .coef = 0.3712f};
    launch(&a, 2);
    t[i] = (MplOptTensor){.g = g2[i], .n = sizes[i]};
  }
  Launch a = {.which = 3, .coef = 0.3712f};
  launch(&a, fill(&a, t, NT, 256, 2));
  for (int i = 0; i < NT; i++) {
    size_t b = sizeof(float) * (size_t)sizes[i];
    ck_assert_msg(!memcmp(g[i], g1[i], b) && !memcmp(g[i], g2[i], b), "scale, n %lld: not optim.c's bits", (long long)sizes[i]);
    free(g[i]), free(g1[i]), free(g2[i]);
  }
}
END_TEST

/* Sums of squares with at most `cap` parts a tensor (the device's SUMSQ_PARTS). */
static void sumsq_case(int64_t cap) {
  float *g[NT];
  double single[NT], listed[NT];
  MplOptTensor t[NT];
  double *partial = calloc((size_t)(NT * 16 + 1), sizeof(double));
  ck_assert_ptr_nonnull(partial);
  for (int i = 0; i < NT; i++) {
    int64_t n = sizes[i], parts = (n + PER_PART - 1) / PER_PART;
    parts = parts < 1 ? 1 : parts > cap ? cap : parts;
    g[i] = filled(n, -3, 3);
    Launch a = {.which = 4, .g = g[i], .n = n, .partial = partial};
    launch(&a, parts);
    Launch f = {.which = 5, .partial = partial, .nparts = (int)parts, .out = &single[i]};
    launch(&f, 1);
    listed[i] = -1;
    t[i] = (MplOptTensor){.g = g[i], .out = &listed[i], .n = n};
  }
  Launch a = {.which = 6, .partial = partial};
  long long blocks = fill(&a, t, NT, PER_PART, cap);
  ck_assert_int_le(blocks, NT * 16);
  launch(&a, blocks);
  a.which = 7;
  launch(&a, NT);
  for (int i = 0; i < NT; i++) {
    double cpu = mpl_sumsq_f64(g[i], sizes[i]);
    ck_assert_msg(memcmp(&single[i], &listed[i], sizeof(double)) == 0, "sumsq, n %lld, cap %lld: listed %.17g, single %.17g",
                  (long long)sizes[i], (long long)cap, listed[i], single[i]);
    ck_assert_msg(fabs(single[i] - cpu) <= 1e-12 * cpu, "sumsq, n %lld: %.17g, optim.c %.17g", (long long)sizes[i], single[i], cpu);
    free(g[i]);
  }
  ck_assert(listed[NT - 1] == 0.0); /* n = 0 */
  free(partial);
}

START_TEST(test_sumsq) {
  sumsq_case(16);
  sumsq_case(2); /* 4097 and 9000 capped: a part's grid-stride */
}
END_TEST

int main(void) {
  Suite *s = suite_create("optim_cu");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_list_layout);
  tcase_add_test(tc, test_adamw);
  tcase_add_test(tc, test_sgd);
  tcase_add_test(tc, test_sgd_list);
  tcase_add_test(tc, test_scale);
  tcase_add_test(tc, test_sumsq);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
