# A param declared in a loop's body is declared again by each next iteration: said so, with
# the way to name one per iteration (pass 71: 'declared twice', and a note at the same place).
model m(x: f32[B, 16], y: i32[B]) {
  for i in 0..3 {
    param w: f32[16, 16] = normal(0.02)
    x = relu(x @ w)
  }
  return cross_entropy(x, y)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 1
}
