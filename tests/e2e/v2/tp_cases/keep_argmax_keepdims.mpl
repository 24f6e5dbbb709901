# argmax with keepdims over an axis before the split one
mesh(tp = 2)
model m(x: f32[B, 6, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[16, 4] = normal(0.3) @shard(0)
  h = tanh(x @ w1)
  a = cast(argmax(h, 1, keepdims = true), f32)
  z = mean(h, axis = 1) * (1.0 + 0.1 * mean(a, axis = 1))
  return cross_entropy(z @ w2, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
