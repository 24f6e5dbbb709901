# sgd with positional args, cosine with positional args, zb schedule.
model m(x: f32[B, 3], y: i32[B]) {
  param w: f32[3, 5] = normal(0.1)
  return cross_entropy(x @ w, y)
}

train m {
  optimizer = sgd(0.1, 0.9)
  lr_schedule = cosine(5, 0.0)
  schedule = zb
  data = synthetic(64)
}
