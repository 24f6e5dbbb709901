# concat of two split activations along the split axis, then row-parallel
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[8, 16] = normal(0.3) @shard(1)
  param w3: f32[32, 4] = normal(0.3) @shard(0)
  c = concat(gelu(x @ w1), tanh(x @ w2), axis = 1)
  return cross_entropy(c @ w3, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
