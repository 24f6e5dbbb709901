# Slices and indices out of range.
model m(x: f32[B, 4], y: i32[B]) {
  a = x[..., 3:1]
  b = x[0, 0, 0]
  c = x[:, 7]
  d = x[..., ...]
  return cross_entropy(x, y)
}
