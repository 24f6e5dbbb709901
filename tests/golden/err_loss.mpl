# The model must return a scalar f32 loss.
model m(x: f32[B, 4], y: i32[B]) {
  return x * 2.0
}
