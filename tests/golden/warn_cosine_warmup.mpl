# args: --emit=graph
# A cosine warm-up not shorter than the run (steps given) is warned of (pass 71: silent).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 10
  lr_schedule = cosine(100, 1e-5)
}
