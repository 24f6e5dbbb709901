# conv2d whose weight expects other input channels than x has.
model m(img: f32[B, 3, 8, 8], y: i32[B]) {
  param w: f32[4, 2, 3, 3] = normal(0.1)
  p = conv2d(img, w, padding = 1)
  return cross_entropy(mean(mean(p, axis = 3), axis = 2), y)
}
