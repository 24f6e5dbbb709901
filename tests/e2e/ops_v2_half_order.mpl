# The ordering ops on half types (pass 46: refused, "topk needs an f32 or i32 tensor"):
# topk and argmax order a bf16 tensor by its exact f32 values (topk's values gathered from
# the bf16 tensor), cumsum of an f16 tensor sums in f32 and rounds each result to f16, as
# PyTorch's. tests/e2e/ops_v2.sh: one step against the float64 reference.
model m(x: f32[B, 5], y: i32[B]) {
  param a: f32[4, 5] = normal(1.0)
  v, i = topk(cast(a, bf16), 2)
  c = cumsum(cast(a * x[0:4, :], f16), 1)
  g = argmax(cast(a, bf16), 1, keepdims = true)
  w = cast(i, f32) + cast(g, f32) * 0.5
  return sum(cast(v, f32) * (w + 1.0)) + sum(cast(c, f32) * cast(c, f32)) + mean(cast(y, f32)) * 0.0
}
train m {
  batch = 4
  steps = 1
  optimizer = sgd(lr = 0.1)
}
