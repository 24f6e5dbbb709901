# a value split in 2 groups, reshaped (heads), reshaped back, then row-parallel
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1, groups = 2)
  param w2: f32[16, 4] = normal(0.3) @shard(0)
  h = reshape(gelu(x @ w1), B, 4, 4)
  return cross_entropy(reshape(h, B, 16) @ w2, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
