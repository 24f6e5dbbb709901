# a cosine whose min_lr is above the optimizer's lr would raise the learning rate as it
# "decays" (a swapped pair): an error, found whatever the keys' order
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 4
  steps = 5
  lr_schedule = cosine(warmup = 2, min_lr = 5.0)
  optimizer = sgd(lr = 1.0)
}
