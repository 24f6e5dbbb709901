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
//
// The multi-tensor kernels (mpl_*_list) do the same per element over up to MPL_LIST
// tensors in one launch: a tensor list passed by value (MplList, 8 words a tensor, filled
// by device_cuda_progs.c's mpl_cuda_opt_list), each tensor a contiguous range of the
// launch's blocks; a tensor's sum of squares uses the blocks and the tree its single
// launch would, so every result is the single kernel's bits.
//
// The same file also compiles as C on the host (tests/unit/test_optim_cu.c defines
// MPL_CU_HOST, tests/unit/cuda_host.h runs a block's threads as pthreads).
#ifndef MPL_CU_HOST
#define MPL_KERNEL(nthreads) extern "C" __global__ void __launch_bounds__(nthreads)
#define MPL_DEV __device__ static inline
#define MPL_SHARED __shared__
#define MPL_SYNC() __syncthreads()
#endif
/* mplrun's optimizer kernels (runtime/device_cuda_progs.c) */
#define MPL_GRID_STRIDE(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)

/* torch SGD at element i: mode 0 no momentum (p += -lr*g), 1 the first step (buf = g), 2 buf =
 * buf*mom + g; then p += -lr*buf. */
MPL_DEV void mpl_sgd_at(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ buf, long long i,
                        float neg_lr, float mom, int mode) {
  float b = g[i];
  if (mode == 2) b = buf[i] * mom + b;
  if (mode != 0) buf[i] = b;
  p[i] = p[i] + neg_lr * b;
}

MPL_KERNEL(256) mpl_sgd(float *__restrict__ p, const float *__restrict__ g,
                                    float *__restrict__ buf, long long n, float neg_lr, float mom, int mode) {
  MPL_GRID_STRIDE(i, n) mpl_sgd_at(p, g, buf, i, neg_lr, mom, mode);
}

/* torch AdamW at element i: optim.c's adamw_one, operation by operation. */
MPL_DEV void mpl_adamw_at(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                          float *__restrict__ v, long long i, float decay, float w1, float b2, float w2,
                          float neg_step, float bc2_sqrt, float eps, int do_decay, int small) {
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

/* torch AdamW (single tensor): see MplAdamWScalars in runtime/exec.h. */
MPL_KERNEL(256) mpl_adamw(float *__restrict__ p, const float *__restrict__ g,
                                      float *__restrict__ m, float *__restrict__ v, long long n,
                                      float decay, float w1, float b2, float w2, float neg_step,
                                      float bc2_sqrt, float eps, int do_decay, int small) {
  MPL_GRID_STRIDE(i, n) mpl_adamw_at(p, g, m, v, i, decay, w1, b2, w2, neg_step, bc2_sqrt, eps, do_decay, small);
}

MPL_KERNEL(256) mpl_scale(float *__restrict__ g, long long n, float coef) {
  MPL_GRID_STRIDE(i, n) g[i] = g[i] * coef;
}

/* The 256 values of a block summed by a fixed tree; the result in s[0]. */
MPL_DEV void mpl_tree256(double *s) {
  int t = (int)threadIdx.x;
  MPL_SYNC();
  for (int w = 128; w > 0; w >>= 1) {
    if (t < w) s[t] = s[t] + s[t + w];
    MPL_SYNC();
  }
}

/* partial[b] = the sum of g[i]^2 in float64 over block b's elements (thread t takes
 * i = b*256 + t, then every gridDim.x*256 further, in order); 256 threads a block. */
MPL_KERNEL(256) mpl_sumsq(const float *__restrict__ g, long long n,
                                                              double *__restrict__ partial) {
  MPL_SHARED double s[256];
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
MPL_KERNEL(256) mpl_sumsq_final(const double *__restrict__ partial,
                                                                    int nparts, double *__restrict__ out) {
  MPL_SHARED double s[256];
  double acc = 0.0;
  for (int i = (int)threadIdx.x; i < nparts; i += 256) acc = acc + partial[i];
  s[threadIdx.x] = acc;
  mpl_tree256(s);
  if (threadIdx.x == 0) *out = s[0];
}

/* ---- multi-tensor forms ------------------------------------------------------------------
 * A list of up to MPL_LIST tensors, by value (the kernel's parameter: 2 KiB + 8 B), tensor k
 * in words w[k*MPL_LIST_ROW + ...]: 0 p (or g), 1 g, 2 m, 3 v (sumsq: out, a double *),
 * 4 n, 5 its first block, 6 AdamW: the decay's float bits | do_decay << 32, SGD: its mode, 7 its end block
 * (the next tensor's first); w[MPL_LIST * MPL_LIST_ROW]: the count. */
#define MPL_LIST 32
#define MPL_LIST_ROW 8
typedef struct MplList {
  long long w[MPL_LIST * MPL_LIST_ROW + 1];
} MplList;

/* The tensor whose blocks hold block b. */
MPL_DEV const long long *mpl_list_row(const MplList *L, long long b) {
  int k = 0, count = (int)L->w[MPL_LIST * MPL_LIST_ROW];
  while (k + 1 < count && L->w[(k + 1) * MPL_LIST_ROW + 5] <= b) k++;
  return L->w + k * MPL_LIST_ROW;
}

/* Element i of this thread in its tensor, then every (its blocks x 256) further. */
#define MPL_LIST_STRIDE(i, r)                                                                     \
  for (long long i = ((long long)blockIdx.x - (r)[5]) * 256 + threadIdx.x; i < (r)[4];             \
       i += ((r)[7] - (r)[5]) * 256)

/* mpl_sgd over the list (m: the momentum buffer); the mode per tensor, lr and momentum shared. */
MPL_KERNEL(256) mpl_sgd_list(MplList L, float neg_lr, float mom) {
  const long long *r = mpl_list_row(&L, blockIdx.x);
  float *p = (float *)r[0], *buf = (float *)r[2];
  const float *g = (const float *)r[1];
  int mode = (int)r[6];
  MPL_LIST_STRIDE(i, r) mpl_sgd_at(p, g, buf, i, neg_lr, mom, mode);
}

/* mpl_adamw over the list; decay and do_decay per tensor (its weight decay), the rest shared. */
MPL_KERNEL(256) mpl_adamw_list(MplList L, float w1, float b2, float w2, float neg_step, float bc2_sqrt, float eps,
                               int small) {
  const long long *r = mpl_list_row(&L, blockIdx.x);
  float *p = (float *)r[0], *m = (float *)r[2], *v = (float *)r[3];
  const float *g = (const float *)r[1];
  float decay = __uint_as_float((unsigned)(r[6] & 0xffffffffll));
  int do_decay = (int)(r[6] >> 32);
  MPL_LIST_STRIDE(i, r) mpl_adamw_at(p, g, m, v, i, decay, w1, b2, w2, neg_step, bc2_sqrt, eps, do_decay, small);
}

MPL_KERNEL(256) mpl_scale_list(MplList L, float coef) {
  const long long *r = mpl_list_row(&L, blockIdx.x);
  float *g = (float *)r[0];
  MPL_LIST_STRIDE(i, r) g[i] = g[i] * coef;
}

/* mpl_sumsq over the list: a tensor's blocks are its single launch's (its block j is that
 * launch's block j, partial[first + j] that launch's partial[j]). */
MPL_KERNEL(256) mpl_sumsq_list(MplList L, double *__restrict__ partial) {
  MPL_SHARED double s[256];
  const long long *r = mpl_list_row(&L, blockIdx.x);
  const float *g = (const float *)r[0];
  long long n = r[4], j = (long long)blockIdx.x - r[5], parts = r[7] - r[5];
  double acc = 0.0;
  for (long long i = j * 256 + threadIdx.x; i < n; i += parts * 256) {
    double x = (double)g[i];
    acc = acc + x * x;
  }
  s[threadIdx.x] = acc;
  mpl_tree256(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

/* Block k: tensor k's partial sums summed as mpl_sumsq_final sums a single launch's. */
MPL_KERNEL(256) mpl_sumsq_final_list(MplList L, const double *__restrict__ partial) {
  MPL_SHARED double s[256];
  const long long *r = L.w + (long long)blockIdx.x * MPL_LIST_ROW;
  const double *part = partial + r[5];
  int nparts = (int)(r[7] - r[5]);
  double acc = 0.0;
  for (int i = (int)threadIdx.x; i < nparts; i += 256) acc = acc + part[i];
  s[threadIdx.x] = acc;
  mpl_tree256(s);
  if (threadIdx.x == 0) *(double *)r[3] = s[0];
}
