# A matrix product of mismatched shapes names both shapes and both places.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[5, 3] = normal(0.02)
  return cross_entropy(x @ w, y)
}
