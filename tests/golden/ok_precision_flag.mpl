# args: --emit=graph --precision tf32
# mplc --precision overrides the train key.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(1.0)
  return cross_entropy(x @ w, y)
}

train m {
  batch = 2
  precision = bf16
}
