# A symbolic dimension bound by one argument and contradicted by another.
def combine(a: f32[B, n], b: f32[n, m]) -> f32[B, m] {
  return a @ b
}

model m(x: f32[B, 4], w: f32[5, 3], y: i32[B]) {
  return cross_entropy(combine(x, w), y)
}
