# An lr of 0 is accepted, as torch.optim accepts it (pass 83; it was an error), and then a
# cosine min_lr above it is the one error (pass 49: there were two). eps = 0 is accepted,
# as torch.optim accepts it, with a warning: an element with no gradient yet updates by 0 / 0.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 4
  optimizer = adamw(lr = 0, eps = 0)
  lr_schedule = cosine(warmup = 2, min_lr = 1e-4)
}
