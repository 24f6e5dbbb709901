# conv2d with no output (a 5x5 kernel on a 3x3 image without padding), a bad stride, and
# operands that are not images.
model m(img: f32[B, 2, 3, 3], x: f32[B, 6], y: i32[B]) {
  param w: f32[4, 2, 5, 5] = normal(0.1)
  p = conv2d(img, w)
  q = conv2d(img, w, stride = 0, padding = 2)
  r = conv2d(x, w)
  return cross_entropy(x, y)
}
