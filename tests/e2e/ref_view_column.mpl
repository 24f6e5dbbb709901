# Made by pass 113 (mutation testing of the fusion code); ops_v2.sh checks one step against
# the float64 reference. Its mutant K05 passed every other suite.
# a column of a reshaped param, read through views: index j*4 of a [4, 6] value
model m(x: f32[8, 6], y: i32[8]) {
  param a: f32[4, 6] = normal(0.5)
  r = reshape(a, 6, 4)
  s = r[:, 0:1]
  return cross_entropy(x + reshape(s, 6), y)
}

train m {
  data = synthetic(16)
  batch = 8
  optimizer = sgd(lr = 0.1)
  steps = 1
}
