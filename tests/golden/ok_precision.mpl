# The train key precision: shown on --emit=graph's train line (only when it is not f32);
# it changes no type in the program (the rounding comes after autodiff: --emit=grad).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(1.0)
  return cross_entropy(x @ w, y)
}

train m {
  batch = 2
  precision = bf16
}
