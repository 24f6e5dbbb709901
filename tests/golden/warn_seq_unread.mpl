# seq given where nothing reads it (no T in the model, no i32[B, seq] input): a warning,
# and the job is still written.
model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 4] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  data = synthetic(16)
  batch = 8
  seq = 16
}
