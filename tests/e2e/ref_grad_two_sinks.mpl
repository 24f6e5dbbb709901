# Made by pass 113 (mutation testing of the fusion code); ops_v2.sh checks one step against
# the float64 reference. Its mutant F13 passed every other suite.
# one matmul (the gradient of w + w) read by two PARAM_GRAD sinks of the same param
model m(x: f32[8, 4], y: i32[8]) {
  param w: f32[4, 4] = normal(0.5)
  z = tanh(x @ (w + w))
  return cross_entropy(z, y)
}

train m {
  data = synthetic(16)
  batch = 8
  optimizer = sgd(lr = 0.1)
  steps = 1
}
