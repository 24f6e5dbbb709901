# Stage numbers must be 0 <= k < pp.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  h = relu(x) @stage(0)
  h = tanh(h) @stage(2)
  h = exp(h) @device(-1)
  return cross_entropy(h, y) @stage(1)
}
