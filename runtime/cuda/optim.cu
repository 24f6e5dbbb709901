// runtime/cuda/optim.cu — mplrun's optimizer kernels on the GPU: SGD, AdamW, the gradient
// scaling of clipping and the float64 sum of squares of its norm. Compiled with NVRTC by
// every cuda device at init (runtime/device_cuda_progs.c: mpl_cuda_optim_compile; --fmad=false,
// IEEE division and square root); embedded at build time as mpl_cuda_optim_src
// (tools/embed.sh, which leaves out these leading // lines).
//
// Invariants: per element, optim.c's arithmetic, operation by operation (no FMA), so an
// update matches the CPU's bits for the same gradient; the elementwise kernels loop
// grid-stride (any launch shape gives the same bits); the two sum-of-squares kernels run
// with 256 threads a block (ORDER: BLOCK in cuda_dev.h) and add by a fixed tree whose
// shape depends on n only (the same sum on every GPU).
/* mplrun's optimizer kernels (runtime/device_cuda_progs.c) */
#define MPL_GRID_STRIDE(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)

/* torch SGD: mode 0 no momentum (p += -lr*g), 1 the first step (buf = g), 2 buf = buf*mom + g;
 * then p += -lr*buf. */
extern "C" __global__ void mpl_sgd(float *__restrict__ p, const float *__restrict__ g,
                                    float *__restrict__ buf, long long n, float neg_lr, float mom, int mode) {
  MPL_GRID_STRIDE(i, n) {
    float b = g[i];
    if (mode == 2) b = buf[i] * mom + b;
    if (mode != 0) buf[i] = b;
    p[i] = p[i] + neg_lr * b;
  }
}

/* torch AdamW (single tensor): see MplAdamWScalars in runtime/exec.h. */
extern "C" __global__ void mpl_adamw(float *__restrict__ p, const float *__restrict__ g,
                                      float *__restrict__ m, float *__restrict__ v, long long n,
                                      float decay, float w1, float b2, float w2, float neg_step,
                                      float bc2_sqrt, float eps, int do_decay, int small) {
  MPL_GRID_STRIDE(i, n) {
    float pi = do_decay ? p[i] * decay : p[i];
    float gi = g[i], mi = m[i];
    mi = small ? mi + w1 * (gi - mi) : gi - (gi - mi) * (1.0f - w1);
    float vi = v[i] * b2;
    vi = vi + (w2 * gi) * gi;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    p[i] = pi + (neg_step * mi) / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

extern "C" __global__ void mpl_scale(float *__restrict__ g, long long n, float coef) {
  MPL_GRID_STRIDE(i, n) g[i] = g[i] * coef;
}

/* The 256 values of a block summed by a fixed tree; the result in s[0]. */
__device__ void mpl_tree256(double *s) {
  int t = (int)threadIdx.x;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if (t < w) s[t] = s[t] + s[t + w];
    __syncthreads();
  }
}

/* partial[b] = the sum of g[i]^2 in float64 over block b's elements (thread t takes
 * i = b*256 + t, then every gridDim.x*256 further, in order); 256 threads a block. */
extern "C" __global__ void __launch_bounds__(256) mpl_sumsq(const float *__restrict__ g, long long n,
                                                              double *__restrict__ partial) {
  __shared__ double s[256];
  double acc = 0.0;
  for (long long i = (long long)blockIdx.x * 256 + threadIdx.x; i < n; i += (long long)gridDim.x * 256) {
    double x = (double)g[i];
    acc = acc + x * x;
  }
  s[threadIdx.x] = acc;
  mpl_tree256(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

/* *out = partial[0 .. nparts) summed the same way; one block of 256 threads. */
extern "C" __global__ void __launch_bounds__(256) mpl_sumsq_final(const double *__restrict__ partial,
                                                                    int nparts, double *__restrict__ out) {
  __shared__ double s[256];
  double acc = 0.0;
  for (int i = (int)threadIdx.x; i < nparts; i += 256) acc = acc + partial[i];
  s[threadIdx.x] = acc;
  mpl_tree256(s);
  if (threadIdx.x == 0) *out = s[0];
}
