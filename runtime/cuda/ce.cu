// runtime/cuda/ce.cu — the fused cross-entropy (JS_CE; issue 14 item 3) on the GPU: the row
// work between the block products, which device_cuda_progs.c runs with cuBLAS. Per block of rows
// [r0, r0 + rr) the logits L [rr, V] come from one product; mpl_ce_rows (one CUDA block per
// row) finds the row's max m and e = exp(L - m) (in place), s = sum e, writes the row's loss
// m + log s - L[target] and turns L into g = (e / s - onehot) / N in place, before g's two
// products (dx1 = g w, dw1 += g^T x); mpl_ce_finish writes the loss, the mean of the rows'.
// bf16 (the step's precision): each logit rounded to bf16 before the softmax, and g before
// its products, as runtime/ce_cpu.c does. Compiled once per device with NVRTC
// (mpl_cuda_ce_compile); embedded as mpl_cuda_ce_src (tools/embed.sh, which leaves out
// these lines).
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
#define CE_THREADS 256 /* threads a block (ORDER: CE_THREADS in runtime/device_cuda_progs.c) */
#endif

/* The nearest bf16 value, ties to even; a NaN stays a NaN (the CPU's bits). */
MPL_DEV float mpl_ce_bf16(float x) {
  unsigned u = __float_as_uint(x);
  if (x != x) return __uint_as_float((u | 0x00400000u) & 0xFFFF0000u);
  return __uint_as_float((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}

/* One block per row i of the block (row r0 + i of the step): L[i, 0..V) rounded to bf16 in
 * place when bf16; e = exp(L - max) in place, s = sum e; loss[r0 + i] = max + log s -
 * L[i, target] (NaN for a target outside [0, V)); then L[i, j] = g = (e / s - [j = target])
 * * scale, rounded to bf16 when bf16, and its bf16 bits in L16[i, j] when L16 is not NULL
 * (bf16 inputs: g's products read it there). */
MPL_KERNEL(CE_THREADS) mpl_ce_rows(float *L, long long V, long long r0, const int *targets, double *loss,
                                   float scale, int bf16, unsigned short *L16) {
  MPL_SHARED float red[CE_THREADS];
  long long i = blockIdx.x;
  int t = (int)threadIdx.x;
  float *l = L + i * V;
  float mx = -MPL_INF;
  for (long long j = t; j < V; j += CE_THREADS) {
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
  long long tg = targets[r0 + i];
  bool ok = tg >= 0 && tg < V;
  float m = red[0], lt = ok ? l[tg] : 0.0f;
  MPL_SYNC();
  float sum = 0.0f; /* e = exp(L - m) in place */
  for (long long j = t; j < V; j += CE_THREADS) {
    float e = expf(l[j] - m);
    l[j] = e;
    sum += e;
  }
  red[t] = sum;
  MPL_SYNC();
  for (int h = CE_THREADS / 2; h > 0; h /= 2) {
    if (t < h) red[t] += red[t + h];
    MPL_SYNC();
  }
  float inv = (float)(1.0 / (double)red[0]);
  if (t == 0) loss[r0 + i] = ok ? (double)m + log((double)red[0]) - (double)lt : (double)(MPL_INF - MPL_INF);
  for (long long j = t; j < V; j += CE_THREADS) {
    float g = (l[j] * inv - (j == tg ? 1.0f : 0.0f)) * scale;
    l[j] = g = bf16 ? mpl_ce_bf16(g) : g;
    if (L16) L16[i * V + j] = (unsigned short)(__float_as_uint(g) >> 16);
  }
}

/* One block: out = the mean of loss [N] (in double). */
MPL_KERNEL(CE_THREADS) mpl_ce_finish(const double *loss, float *out, long long N) {
  MPL_SHARED double acc[CE_THREADS];
  int t = (int)threadIdx.x;
  double a = 0.0;
  for (long long r = t; r < N; r += CE_THREADS) a += loss[r];
  acc[t] = a;
  MPL_SYNC();
  for (int h = CE_THREADS / 2; h > 0; h /= 2) {
    if (t < h) acc[t] += acc[t + h];
    MPL_SYNC();
  }
  if (t == 0) out[0] = (float)(acc[0] / (double)N);
}
