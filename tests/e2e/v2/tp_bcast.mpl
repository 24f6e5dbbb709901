# A replicated param broadcast along a split axis (a per-row scale of a column-parallel
# activation): each rank's gradient of it is a partial sum, so it goes through tp_enter
# and its gradient is all-reduced (before issue 13 it was not: tp = 2 trained s, w1
# and w2 off by up to 12%). tests/e2e/tp_v2.sh.
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[16, 8] = normal(0.3) @shard(0)
  param s: f32[B, 1] = normal(1.0)
  h = gelu(x @ w1) * s
  return cross_entropy(h @ w2, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
