# args: --emit=graph
# Optimizer and schedule numbers must be finite in f32, where the update computes: an lr of
# inf or 1e40 made the first step's lr nan.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.5)
  return cross_entropy(x @ w, y)
}
train m {
  data = synthetic(8)
  batch = 4
  optimizer = adamw(lr = inf, eps = 1e40)
  lr_schedule = cosine(warmup = 2, min_lr = inf)
}
