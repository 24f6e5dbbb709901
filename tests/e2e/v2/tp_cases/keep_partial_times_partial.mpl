# a product of two partial sums (a row-parallel output times a sum over the split dimension)
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[16, 4] = normal(0.3) @shard(0)
  h = gelu(x @ w1)
  s = sum(h, axis = -1, keepdims = true)
  return cross_entropy((h @ w2) * s, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
