# reshape to a wrong element count, two -1s, and a bad axis.
model m(x: f32[B, 6], y: i32[B]) {
  a = reshape(x, B, 4)
  b = reshape(x, -1, -1)
  c = softmax(x, axis = 2)
  d = transpose(x, 0, 5)
  return cross_entropy(x, y)
}
