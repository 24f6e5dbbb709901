# gather from a split table with indices shorter along the split axis
mesh(tp = 2)
model m(x: f32[B, 6, 8], k: i32[B, 4, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[8, 4] = normal(0.3) @shard(0)
  h = tanh(x @ w1)
  g = gather(h, k, 1)
  return cross_entropy(mean(g, axis = 1) @ w2, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
