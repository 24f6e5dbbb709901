# More wrong validation values: an empty file name, a float cadence, too many batches.
model m(idx: i32[B, T], targets: i32[B, T]) {
  param w: f32[8, 8] = normal(0.02)
  return cross_entropy(embedding(idx, 8, 8) @ w, targets)
}
train m {
  data = tokens("train.bin")
  val = tokens("")
  eval_every = 2.5
  eval_batches = 2000000000
}
