# Defaults and folds the suites' programs never showed (pass 109): concat's default axis is 0,
# transpose with no axes swaps the last two (rank 3), cast(2.7, i32) truncates to 2,
# where(mask, 1, 0.5) takes float constants, != compares bool tensors, a bf16 full holds its
# value rounded (0.1 is 0.100098), conv2d's kernel may be the input's whole (padded) size
model m(x: f32[B, 4], y: i32[B]) {
  c = concat(x, x * 2.0)
  t = transpose(reshape(x, 2, B, 2))
  k = x * cast(2.7, i32)
  w = where(x > 0.0, 1, 0.5)
  n = cast((x > 0.0) != (x < 1.0), f32)
  f = cast(full(0.1, 4, dtype = bf16), f32)
  param wc: f32[3, 1, 4, 4] = normal(0.5)
  cv = conv2d(reshape(x, B, 1, 2, 2), wc, padding = 1)
  return cross_entropy(x + sum(c) + sum(t) + k + w + n + f + sum(cv), y)
}
train m {
  batch = 8
}
