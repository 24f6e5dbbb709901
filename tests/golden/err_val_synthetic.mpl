# Validation needs a token model trained on token data: val with synthetic data is refused
# (whichever key comes first).
model m(idx: i32[B, T], targets: i32[B, T]) {
  param w: f32[8, 8] = normal(0.02)
  return cross_entropy(embedding(idx, 8, 8) @ w, targets)
}
train m {
  val = tokens("val.bin")
  eval_batches = 2
  data = synthetic(64)
}
