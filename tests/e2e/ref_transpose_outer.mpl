# Made by pass 113 (mutation testing of the fusion code); ops_v2.sh checks one step against
# the float64 reference. Its mutant F12 passed every other suite.
# a transpose of axes 0 and 2 (not the last two) read only by a matmul
model m(x: f32[4, 4, 4], y: i32[4]) {
  param w: f32[4, 4, 4] = normal(0.5)
  h = transpose(w, 0, 2) @ x
  z = sum(h, axis = 2)
  return cross_entropy(z, y)
}

train m {
  data = synthetic(16)
  batch = 4
  optimizer = sgd(lr = 0.1)
  steps = 1
}
