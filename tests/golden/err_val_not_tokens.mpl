# val = tokens(...) over synthetic data is a warning only where mplrun --data could give the
# run its tokens; a model whose inputs cannot take token data is refused (pass 84: a job that
# could never run).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 4
  val = tokens("val.bin")
}
