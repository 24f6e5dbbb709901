# One activation read by products inside and outside a @recompute region (tests/unit/
# test_bf16.c, pass 104): under bf16 each context rounds it for itself, so that a
# recomputation reads a rounding it makes again, not one held from the forward.
model m(x: f32[B, 16], y: i32[B]) {
  param w1: f32[16, 16] = normal(0.2)
  param w2: f32[16, 16] = normal(0.2)
  param w3: f32[16, 8] = normal(0.2)
  param w4: f32[16, 8] = normal(0.2)
  h = relu(x @ w1)
  @recompute {
    a = gelu(h @ w2) @ w3
  }
  b = h @ w4
  return cross_entropy(a + b, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.1); steps = 2; seed = 1; precision = bf16 }
