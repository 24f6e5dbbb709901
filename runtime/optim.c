/*
 * optim.c — the optimizers (SGD, AdamW), global-norm gradient clipping and the
 * learning-rate schedules.
 *
 * Invariants:
 *  - the arithmetic is torch.optim's single-tensor CPU path, operation by operation, in
 *    float32 per element with every Python scalar (computed in double) rounded to float
 *    once, as torch does when it applies a scalar to a float tensor;
 *    the one known difference: torch's vectorised lerp uses a fused multiply-add, we
 *    round twice (no FMA anywhere, as in the generated kernels);
 *  - everything is a pure function of its arguments, so every rank holding a param
 *    updates it to the same bits.
 */
#include "exec.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#endif

/* AdamW's per-element arithmetic (see mpl_adamw_update), shared by the loops below and,
 * through mpl_adamw_scalars, by the device backends' update kernels. */
typedef MplAdamWScalars AdamW;

static inline void adamw_one(const AdamW *a, float *p, const float *g, float *m, float *v, int64_t i) {
  float pi = a->do_decay ? p[i] * a->decay : p[i];
  float gi = g[i], mi = m[i];
  mi = a->small ? mi + a->w1 * (gi - mi) : gi - (gi - mi) * (1.0f - a->w1);
  float vi = v[i] * a->b2;
  vi = vi + (a->w2 * gi) * gi;
  float denom = sqrtf(vi) / a->bc2_sqrt + a->eps;
  p[i] = pi + (a->neg_step * mi) / denom;
  m[i] = mi;
  v[i] = vi;
}

#ifdef HAVE_AVX512_PATH
/* 16 elements at a time with AVX-512 where the CPU has it: the same IEEE operations in
 * the same order (no FMA), so the same bits as adamw_one; the rest one by one. */
__attribute__((target("avx512f"))) static int64_t adamw_avx512(const AdamW *a, float *p, const float *g, float *m,
                                                                float *v, int64_t n) {
  __m512 decay = _mm512_set1_ps(a->decay), w1 = _mm512_set1_ps(a->w1), one_w1 = _mm512_set1_ps(1.0f - a->w1);
  __m512 b2 = _mm512_set1_ps(a->b2), w2 = _mm512_set1_ps(a->w2), ns = _mm512_set1_ps(a->neg_step);
  __m512 bc = _mm512_set1_ps(a->bc2_sqrt), eps = _mm512_set1_ps(a->eps);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 pi = _mm512_loadu_ps(p + i), gi = _mm512_loadu_ps(g + i), mi = _mm512_loadu_ps(m + i);
    if (a->do_decay) pi = _mm512_mul_ps(pi, decay);
    __m512 d = _mm512_sub_ps(gi, mi);
    mi = a->small ? _mm512_add_ps(mi, _mm512_mul_ps(w1, d)) : _mm512_sub_ps(gi, _mm512_mul_ps(d, one_w1));
    __m512 vi = _mm512_mul_ps(_mm512_loadu_ps(v + i), b2);
    vi = _mm512_add_ps(vi, _mm512_mul_ps(_mm512_mul_ps(w2, gi), gi));
    __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc), eps);
    _mm512_storeu_ps(p + i, _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(ns, mi), denom)));
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
  }
  return i;
}
#endif

/* constant, or cosine(warmup, min_lr): lr*(t+1)/warmup while t < warmup, then a cosine
 * from lr at t = warmup down to min_lr at the last step (steps - 1) of a run of `steps`;
 * a cosine of one step (warmup = steps - 1, or a one-step run) is its first: lr, as in
 * nanoGPT and Hugging Face's cosine schedule (a --steps 1 run trains). */
double mpl_lr_at(const TrainConfig *c, int64_t steps, int64_t t) {
  if (c->lr_schedule != LR_COSINE) return c->lr;
  if (t < c->warmup) return c->lr * (double)(t + 1) / (double)c->warmup;
  int64_t span = steps - 1 - c->warmup;
  if (span <= 0) return c->lr;
  double progress = (double)(t - c->warmup) / (double)span;
  if (progress > 1) progress = 1;
  return c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(M_PI * progress));
}

/* torch: buf = clone(g) on the first step, else buf.mul_(momentum).add_(g);
 * p.add_(buf, alpha=-lr). */
void mpl_sgd_update(float *p, const float *g, float *buf, int64_t n, double lr,
                    double momentum, bool first_step) {
  float neg_lr = (float)-lr;
  if (momentum == 0 || !buf) {
    for (int64_t i = 0; i < n; i++) p[i] = p[i] + neg_lr * g[i];
    return;
  }
  float mom = (float)momentum;
  for (int64_t i = 0; i < n; i++) {
    float b = first_step ? g[i] : buf[i] * mom + g[i];
    buf[i] = b;
    p[i] = p[i] + neg_lr * b;
  }
}

/* torch.optim.adamw._single_tensor_adamw:
 *   param.mul_(1 - lr*wd)
 *   exp_avg.lerp_(grad, 1 - beta1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   step_size = lr / (1 - beta1**t); bc2_sqrt = sqrt(1 - beta2**t)
 *   denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-step_size)      # p + (value*m)/denom */
void mpl_adamw_scalars(MplAdamWScalars *a, double lr, double beta1, double beta2, double eps, double weight_decay,
                       int64_t t) {
  float decay = (float)(1.0 - lr * weight_decay);
  float w1 = (float)(1.0 - beta1), b2 = (float)beta2, w2 = (float)(1.0 - beta2);
  double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
  float neg_step = (float)-(lr / bc1), bc2_sqrt = (float)sqrt(bc2), feps = (float)eps;
  bool small = fabsf(w1) < 0.5f; /* lerp's two formulas */
  *a = (MplAdamWScalars){.decay = decay, .w1 = w1, .b2 = b2, .w2 = w2, .neg_step = neg_step, .bc2_sqrt = bc2_sqrt,
                         .eps = feps, .do_decay = weight_decay != 0, .small = small};
}

void mpl_adamw_update(float *p, const float *g, float *m, float *v, int64_t n, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int64_t t) {
  AdamW a;
  mpl_adamw_scalars(&a, lr, beta1, beta2, eps, weight_decay, t);
  int64_t i = 0;
#ifdef HAVE_AVX512_PATH
  if (__builtin_cpu_supports("avx512f")) i = adamw_avx512(&a, p, g, m, v, n);
#endif
  for (; i < n; i++) adamw_one(&a, p, g, m, v, i);
}

double mpl_sumsq_f64(const float *g, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
  return s;
}

double mpl_clip_coef(double total_norm, double max_norm) {
  double coef = max_norm / (total_norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

void mpl_scale_f32(float *g, int64_t n, float coef) {
  for (int64_t i = 0; i < n; i++) g[i] *= coef;
}

/* ---- the CUDA multi-tensor kernels' tensor list (host side; runtime/cuda/optim.cu) ---- */

int64_t mpl_opt_list_fill(MplOptList *L, const MplOptTensor *t, int k, int64_t per_block, int64_t cap) {
  memset(L, 0, sizeof *L);
  int64_t b = 0;
  for (int i = 0; i < k; i++) {
    long long *r = L->w + (size_t)i * MPL_OPT_ROW;
    int64_t nb = (t[i].n + per_block - 1) / per_block;
    nb = nb < 1 ? 1 : nb > cap ? cap : nb;
    r[0] = (long long)(intptr_t)(t[i].p ? t[i].p : t[i].g);
    r[1] = (long long)(intptr_t)t[i].g;
    r[2] = (long long)(intptr_t)t[i].m;
    r[3] = t[i].out ? (long long)(intptr_t)t[i].out : (long long)(intptr_t)t[i].v;
    r[4] = t[i].n;
    r[5] = b;
    b += nb;
    r[7] = b;
  }
  L->w[MPL_OPT_LIST * MPL_OPT_ROW] = k;
  return b;
}

long long mpl_opt_list_adamw_word(const MplAdamWScalars *s) {
  uint32_t bits;
  memcpy(&bits, &s->decay, sizeof bits);
  return (long long)bits | ((long long)(s->do_decay ? 1 : 0) << 32);
}
