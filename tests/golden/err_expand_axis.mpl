# expand grows axes of size 1 only (issue 13); the error points at the size given.
model m(x: f32[B, 3, 1], y: i32[B]) {
  a = expand(x, B, 3, 4)
  b = expand(x, B, 6, 4)
  c = expand(x, 4, 1)
  return cross_entropy(sum(a + b, axis = -1) + sum(c), y)
}
