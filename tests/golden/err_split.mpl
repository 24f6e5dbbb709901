# split into parts that do not divide the dimension.
model m(x: f32[B, 10], y: i32[B]) {
  a, b, c = split(x, 3, axis = -1)
  p, q = split(x, 5)
  return cross_entropy(x, y)
}
