# Validation needs a token model trained on token data: val with synthetic data is a warning
# (whichever key comes first) naming mplrun --data, which gives the run its token data (pass
# 83: an error, though the run with --data validates).
model m(idx: i32[B, T], targets: i32[B, T]) {
  param w: f32[8, 8] = normal(0.02)
  return cross_entropy(embedding(idx, 8, 8) @ w, targets)
}
train m {
  val = tokens("val.bin")
  eval_batches = 2
  data = synthetic(64)
}
