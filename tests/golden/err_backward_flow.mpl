# Data flowing to an earlier stage.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  a = relu(x) @stage(1)
  b = tanh(a) @stage(0)
  return cross_entropy(b, y) @stage(1)
}
