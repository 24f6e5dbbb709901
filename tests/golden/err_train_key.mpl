# Unknown train keys and wrong value kinds.
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m {
  bach = 4
  batch = 2.5
  schedule = pipedream
  optimizer = rmsprop(0.1)
  lr_schedule = linear
  data = tokens(42)
  zero = 2
  steps = 0
  seed = 1
  seed = 2
  grad_clip = true
}
