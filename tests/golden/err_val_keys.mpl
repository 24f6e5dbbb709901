# Validation keys with wrong values: val is tokens("file"), eval_every and eval_batches >= 1.
model m(idx: i32[B, T], targets: i32[B, T]) {
  param w: f32[8, 8] = normal(0.02)
  return cross_entropy(embedding(idx, 8, 8) @ w, targets)
}
train m {
  data = tokens("train.bin")
  val = synthetic(16)
  eval_every = 0
  eval_batches = 0
}
