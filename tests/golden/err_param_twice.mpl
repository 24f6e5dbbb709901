# A param declared twice in one instance.
def twice(x: f32[..., n]) {
  for i in 0..2 {
    param w: f32[n, n] = normal(0.02)
    x = x @ w
  }
  return x
}
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4] = ones
  param w: f32[4] = zeros
  return cross_entropy(twice(x), y)
}
