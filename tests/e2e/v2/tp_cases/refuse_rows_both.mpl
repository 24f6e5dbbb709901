# a product of a param split on its rows with a weight split on its rows
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param a: f32[8, 8] = normal(0.3) @shard(0)
  param w2: f32[8, 4] = normal(0.3) @shard(0)
  return cross_entropy(x @ (a @ w2), y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
