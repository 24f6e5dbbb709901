# A train call's argument given twice, by position and by keyword.
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m {
  batch = 2
  optimizer = sgd(0.1, lr = 0.5)
  lr_schedule = cosine(10, warmup = 3)
}
