# Unbounded recursion is caught.
def forever(x: f32[..., n]) {
  return forever(x + 1.0)
}
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(forever(x), y)
}
