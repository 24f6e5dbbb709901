// runtime/cuda/ce.cu — the fused cross-entropy (JS_CE, JS_CE_BWD; issue 14 item 3) on the
// GPU: the row work between the chunk products, which device_cuda.c runs with cuBLAS. Per
// chunk of classes [c0, c0 + cc) the forward's mpl_ce_rows_fwd folds the chunk's logits
// L [N, cc] into each row's online log-sum-exp (running max m, sum s in double, rescaled
// by exp(m - m') when the max grows) and picks the target's logit; mpl_ce_finish writes
// lse and the loss (the mean of lse - target logit). The backward's mpl_ce_rows_bwd turns
// the recomputed L into g = (exp(L - lse) - onehot) * dloss / N in place, before its two
// products. bf16 (the step's precision): each logit rounded to bf16 before the softmax,
// and g before its products, as runtime/ce_cpu.c does. Compiled once per device with
// NVRTC (mpl_cuda_ce_compile); embedded as mpl_cuda_ce_src (tools/embed.sh, which leaves
// out these lines).
//
// The same file compiles as C on the host (tests/unit/test_ce.c defines MPL_CU_HOST, runs
// a block's threads as pthreads, __syncthreads a barrier), so the kernels are checked
// against a float64 reference on a machine without a GPU.
//
// Determinism: a block's reductions are trees of fixed shape over CE_THREADS threads, the
// grids are fixed by the sizes (no atomics), so a run repeats its bits; they are not the
// CPU's bits (other sum orders).
#ifndef MPL_CU_HOST
#define MPL_KERNEL(nthreads) extern "C" __global__ void __launch_bounds__(nthreads)
#define MPL_DEV __device__ static inline
#define MPL_SHARED __shared__
#define MPL_SYNC() __syncthreads()
#define MPL_INF __int_as_float(0x7f800000)
#endif

#ifndef CE_THREADS
#define CE_THREADS 256 /* threads a block (ORDER: CE_THREADS in runtime/device_cuda.c) */
#endif

/* The nearest bf16 value, ties to even; a NaN stays a NaN (the CPU's bits). */
MPL_DEV float mpl_ce_bf16(float x) {
  unsigned u = __float_as_uint(x);
  if (x != x) return __uint_as_float((u | 0x00400000u) & 0xFFFF0000u);
  return __uint_as_float((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}

/* m = -inf, s = 0, tl = 0 for rows [0, N). Grid: any; threads stride. */
MPL_KERNEL(CE_THREADS) mpl_ce_init(float *m, double *s, float *tl, long long N, long long nthreads) {
  for (long long r = (long long)blockIdx.x * CE_THREADS + threadIdx.x; r < N; r += nthreads)
    m[r] = -MPL_INF, s[r] = 0.0, tl[r] = 0.0f;
}

/* One block per row r: the chunk's logits L[r, 0..cc) (rounded to bf16 in place when bf16)
 * folded into m[r], s[r]; tl[r] = the target's logit when it is in the chunk. */
MPL_KERNEL(CE_THREADS) mpl_ce_rows_fwd(float *L, long long cc, long long c0, const int *targets, float *m,
                                       double *s, float *tl, int bf16) {
  MPL_SHARED float red[CE_THREADS];
  long long r = blockIdx.x;
  int t = (int)threadIdx.x;
  float *l = L + r * cc;
  float mx = -MPL_INF;
  for (long long j = t; j < cc; j += CE_THREADS) {
    float x = l[j];
    if (bf16) l[j] = x = mpl_ce_bf16(x);
    mx = x > mx ? x : mx;
  }
  red[t] = mx;
  MPL_SYNC();
  for (int h = CE_THREADS / 2; h > 0; h /= 2) {
    if (t < h && red[t + h] > red[t]) red[t] = red[t + h];
    MPL_SYNC();
  }
  float m0 = m[r], mn = red[0] > m0 ? red[0] : m0;
  MPL_SYNC();
  float sum = 0.0f;
  for (long long j = t; j < cc; j += CE_THREADS) sum += expf(l[j] - mn);
  red[t] = sum;
  MPL_SYNC();
  for (int h = CE_THREADS / 2; h > 0; h /= 2) {
    if (t < h) red[t] += red[t + h];
    MPL_SYNC();
  }
  long long tg = targets[r];
  if (t == 0) {
    s[r] = (m0 == -MPL_INF ? 0.0 : s[r] * exp((double)m0 - (double)mn)) + (double)red[0];
    m[r] = mn;
    if (tg >= c0 && tg < c0 + cc) tl[r] = l[tg - c0];
  }
}

/* g = (exp(L - lse) - onehot(target)) * dloss / N in place over L [N, cc]. Grid: any. */
MPL_KERNEL(CE_THREADS) mpl_ce_rows_bwd(float *L, long long N, long long cc, long long c0, const int *targets,
                                       const float *lse, const float *dloss, int bf16, long long nthreads) {
  float scale = (float)((double)dloss[0] / (double)N);
  for (long long e = (long long)blockIdx.x * CE_THREADS + threadIdx.x; e < N * cc; e += nthreads) {
    long long r = e / cc, j = e % cc;
    float x = bf16 ? mpl_ce_bf16(L[e]) : L[e];
    float g = (expf(x - lse[r]) - (c0 + j == (long long)targets[r] ? 1.0f : 0.0f)) * scale;
    L[e] = bf16 ? mpl_ce_bf16(g) : g;
  }
}

/* One block: lse[r] = m[r] + log s[r]; loss = the mean of lse - tl (in double). */
MPL_KERNEL(CE_THREADS) mpl_ce_finish(const float *m, const double *s, const float *tl, float *lse, float *loss,
                                     long long N) {
  MPL_SHARED double acc[CE_THREADS];
  int t = (int)threadIdx.x;
  double a = 0.0;
  for (long long r = t; r < N; r += CE_THREADS) {
    float v = (float)((double)m[r] + log(s[r]));
    lse[r] = v;
    a += (double)v - (double)tl[r];
  }
  acc[t] = a;
  MPL_SYNC();
  for (int h = CE_THREADS / 2; h > 0; h /= 2) {
    if (t < h) acc[t] += acc[t + h];
    MPL_SYNC();
  }
  if (t == 0) loss[0] = (float)(acc[0] / (double)N);
}
