# A weight gradient over a million rows: o's gradient is tanh(x)^T @ dlogits, one product
# whose K is 2^20. With one accumulator an element over K (oneDNN's and gemm_narrow's) it
# was 1.6e-3 of its largest element off the float64 reference (pass 41); mpl_gemm_f32 now
# sums chunks of K pairwise (test_refstep).
model m(x: f32[B, 1], y: i32[B]) {
  param o: f32[1, 16] = normal(0.5)
  return cross_entropy(tanh(x) @ o, y)
}
train m {
  batch = 1048576
  microbatches = 1
  optimizer = sgd(lr = 0.02)
  seed = 19
}
