# A mesh axis given twice is an error, as a repeated argument or train key is.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
mesh(pp = 2, pp = 3)
train m { batch = 4; steps = 1 }
