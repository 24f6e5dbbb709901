# for bounds and if conditions must be compile-time.
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..x {
    x = x + 1.0
  }
  if sum(x) > 0.0 {
    x = x * 2.0
  }
  for j in 0..1.5 { }
  return cross_entropy(x, y)
}
