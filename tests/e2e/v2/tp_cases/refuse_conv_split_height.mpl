# conv2d of an image param split on its height
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param img: f32[2, 3, 8, 8] = normal(1.0) @shard(2)
  param w1: f32[4, 3, 3, 3] = normal(0.2)
  param w2: f32[8, 4] = normal(0.3)
  p = conv2d(img, w1, padding = 1)
  return cross_entropy(x @ w2, y) + 0.01 * sum(p * p)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
