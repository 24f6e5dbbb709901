# Shapes that do not broadcast.
model m(x: f32[B, 4], z: f32[3], y: i32[B]) {
  h = x + z
  return cross_entropy(h, y)
}
