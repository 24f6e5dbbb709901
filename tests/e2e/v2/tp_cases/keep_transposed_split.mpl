# a transposed operand split on its (stored) columns, i.e. on the product's rows
mesh(tp = 2)
model m(x: f32[B, 16], y: i32[B]) {
  param a: f32[8, 16] = normal(0.3) @shard(1)
  param w: f32[8, 4] = normal(0.3)
  return cross_entropy(x @ (transpose(a, 0, 1) @ w), y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
