# The precision pass's views and sums (tests/unit/test_bf16.c, pass 104): transposes of the
# last two axes spelled (1, 0), (-1, -2) and (-2, -1), each folded into its product, so the
# rounding goes beneath it; a query bias read by the fused attention straight from its sum
# (its gradient a sum of the attention's dq over rows: f32, not rounded as a product's).
model m(x: f32[B, T, 16], y: i32[B, T]) {
  param wq: f32[16, 16] = normal(0.2)
  param bq: f32[16] = normal(0.1)
  param wk: f32[16, 16] = normal(0.2)
  param wv: f32[16, 16] = normal(0.2)
  param wo: f32[16, 16] = normal(0.2)
  q = transpose(reshape(x @ wq + bq, B, T, 4, 4), 1, 2)
  k = transpose(reshape(x @ transpose(wk, 1, 0), B, T, 4, 4), 1, 2)
  v = transpose(reshape(x @ transpose(wv, -1, -2), B, T, 4, 4), 1, 2)
  o = reshape(transpose(sdpa(q, k, v, causal = true), 1, 2), B, T, 16) @ transpose(wo, -2, -1)
  return cross_entropy(o, y)
}
train m { batch = 2; seq = 5; optimizer = sgd(lr = 0.1); steps = 2; seed = 1; precision = bf16 }
