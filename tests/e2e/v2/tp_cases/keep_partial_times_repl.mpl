# a row-parallel output (a partial sum) times a replicated param: its gradient is partial
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[16, 4] = normal(0.3) @shard(0)
  param c: f32[4] = normal(1.0)
  h = gelu(x @ w1)
  return cross_entropy((h @ w2) * c, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
