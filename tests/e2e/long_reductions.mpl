# Reductions far longer than a row: means over rows x cols = 2^24 elements (of random
# values, and of 0.1: every rounding then errs the same way), a row of 2^16
# and column sums over 2^15 rows (a bias gradient's shape), with no product in the loss (so
# the cpu device and the generated CUDA give its bits alike: test_cuda_jobs). Each lane of a
# reduction once added n / 32 values in turn: the mean of 2^24 copies of 0.1 came out
# 0.1004, this loss 0.04 above the float64 reference (test_refstep); the chunked lane
# order (kernel.h) keeps it within 1e-6. And a cumsum along 2^17 (v's gradient holds its
# values): summed in one running f32 sum, its last value was 0.1% low (PyTorch's CPU sums in
# f64); in blocks of about its square root (fuse_index.c) within 4e-6. And the reverse sum, in
# the gradient of rev: v's gradient there is (n - k) 1e-8, n - k additions of 1e-8.
const rows = 4096
const cols = 4096
const cumn = 131072

model m(x: f32[B, 4], y: i32[B]) {
  param u: f32[rows, cols] = uniform(0.0, 1.0)
  param w: f32[65536] = uniform(0.5, 1.5)
  param c: f32[32768, 2] = normal(1.0)
  param v: f32[cumn] = uniform(0.5, 1.5)
  whole = mean(u * u) * 100.0 + mean(full(0.1, rows, cols) + mean(w) * 0.0) * 100.0
  row = sum(w * w) / 65536.0 * 10.0
  col = sum(sum(c * c, 0)) / 32768.0 * 10.0
  cum = sum(cumsum(v * 0.0 + 0.1, axis = 0) * v) / 131072.0 / 300.0
  rev = sum(cumsum(v, axis = 0)) * 1e-8
  return whole + row + col + cum + rev + mean(x) * 0.0 + mean(cast(y, f32)) * 0.0
}

train m {
  batch = 8
  steps = 1
  optimizer = sgd(lr = 0.1)
}
