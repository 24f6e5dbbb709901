# batch must divide by microbatches * dp.
mesh(dp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m { batch = 10; microbatches = 3 }
