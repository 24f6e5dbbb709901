# A model defined twice is one error: the second definition no longer adds "several models
# and no train block saying which one to train".
model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(x, y)
}
model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(x * 2.0, y)
}
