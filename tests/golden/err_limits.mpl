# Loops too long to unroll, dimensions too large, and overflow.
const huge = 9223372036854775807
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..100000000000 { }
  z = full(0.0, 1048576, 1048576, 1048576)
  k = huge + 1
  d = 1 / 0
  return cross_entropy(x, y)
}
