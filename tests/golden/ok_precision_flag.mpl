# args: --emit=graph --precision tf32
# mplc --precision overrides the train key.
model m(x: f32[B, 4], w: f32[4, 3], y: i32[B]) {
  return cross_entropy(x @ w, y)
}

train m {
  batch = 2
  precision = bf16
}
