// runtime/cuda/embed.cu — an embedding's gradient (JS_EMB_GRAD) on the GPU: out [K, N] gets,
// in each row r, the sum of dy's rows [p, :] over the positions p whose index is r, added in
// position order from 0 (a position whose index is outside [0, K) adds nothing: it is only
// grouped with its clamped row, mpl_emb_row) — device.h's MplEmbGrad, the CPU's additions
// in the CPU's order, so the bits are the CPU's. device_cuda_progs.c zeroes out first (a row
// no position names stays 0) and launches mpl_emb_grad with one block per position.
//
// Block p works only when p is the first position of its row r (it looks for an earlier one
// among positions [0, p) a tile at a time, and stops at the first it finds). It then walks
// the positions [p, M) a tile of EMB_THREADS at a time: the tile's positions of row r are
// listed in order (a prefix sum over the tile's flags), and each thread adds their dy rows
// to the EMB_COLS columns it keeps in registers (columns t, t + EMB_THREADS, ...), one
// position after another; the row is stored once at the end. Wider rows take more passes
// of EMB_THREADS * EMB_COLS columns. The work for one row is serial in its positions (the
// definition's order), but rows run in parallel and each position's dy row is read by one
// block, coalesced; the old kernel gave one thread each column and walked every position
// with a read-modify-write of out per position, a few hundred threads for the whole table.
// Compiled once per device with NVRTC (mpl_cuda_emb_compile); embedded as mpl_cuda_emb_src
// (tools/embed.sh, which leaves out these lines).
//
// The same file compiles as C on the host (tests/unit/test_embed.c defines MPL_CU_HOST and
// runs a block's threads as pthreads, __syncthreads a barrier), so the kernel is checked
// on a machine without a GPU.
#ifndef MPL_CU_HOST
#define MPL_KERNEL(nthreads) extern "C" __global__ void __launch_bounds__(nthreads)
#define MPL_DEV __device__ static inline
#define MPL_SHARED __shared__
#define MPL_SYNC() __syncthreads()
#endif

#ifndef EMB_THREADS
#define EMB_THREADS 256 /* threads a block, a power of two (ORDER: EMB_THREADS in device_cuda_progs.c) */
#endif
#define EMB_COLS 8      /* columns a thread keeps per pass */

/* The row position p is grouped with: its index clamped to [0, K) (one outside adds nothing). */
MPL_DEV long long mpl_emb_row(int t, long long K) { return t < 0 ? 0 : t >= K ? K - 1 : (long long)t; }

MPL_KERNEL(EMB_THREADS) mpl_emb_grad(const int *idx, const float *dy, float *out, long long M, long long N,
                                     long long K) {
  MPL_SHARED int found;
  MPL_SHARED int flag[EMB_THREADS]; /* the tile's inclusive prefix sum of "is row r" */
  MPL_SHARED int list[EMB_THREADS]; /* the tile's positions of row r (offsets in the tile), in order */
  int t = (int)threadIdx.x;
  long long p = blockIdx.x, r = mpl_emb_row(idx[p], K);
  if (t == 0) found = 0;
  MPL_SYNC();
  for (long long q0 = 0; q0 < p; q0 += EMB_THREADS) { /* an earlier position of row r? */
    long long q = q0 + t;
    if (q < p && mpl_emb_row(idx[q], K) == r) found = 1;
    MPL_SYNC();
    int any = found;
    MPL_SYNC(); /* every thread has read it: the block leaves together or not at all */
    if (any) return;
  }
  for (long long c0 = 0; c0 < N; c0 += (long long)EMB_THREADS * EMB_COLS) {
    float acc[EMB_COLS];
    for (int j = 0; j < EMB_COLS; j++) acc[j] = 0.0f;
    for (long long q0 = p; q0 < M; q0 += EMB_THREADS) {
      long long q = q0 + t;
      int mine = q < M && mpl_emb_row(idx[q], K) == r;
      flag[t] = mine;
      MPL_SYNC();
      for (int s = 1; s < EMB_THREADS; s *= 2) { /* Hillis-Steele inclusive scan */
        int add = t >= s ? flag[t - s] : 0;
        MPL_SYNC();
        flag[t] += add;
        MPL_SYNC();
      }
      int n = flag[EMB_THREADS - 1];
      if (mine) list[flag[t] - 1] = t;
      MPL_SYNC();
      for (int i = 0; i < n; i++) {
        long long at = q0 + list[i];
        int ix = idx[at];
        if (ix < 0 || ix >= K) continue; /* adds 0: no change to a sum that starts at +0 */
        const float *g = dy + at * N + c0;
        for (int j = 0; j < EMB_COLS; j++) {
          long long c = t + (long long)j * EMB_THREADS;
          if (c0 + c < N) acc[j] = acc[j] + g[c];
        }
      }
      MPL_SYNC(); /* the list is read before the next tile writes it */
    }
    for (int j = 0; j < EMB_COLS; j++) {
      long long c = c0 + t + (long long)j * EMB_THREADS;
      if (c < N) out[r * N + c] = acc[j];
    }
  }
}
