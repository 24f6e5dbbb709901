# Made by pass 113 (mutation testing of the fusion code); ops_v2.sh checks one step against
# the float64 reference. Its mutant K12 passed every other suite.
# a slice of a reshape of a concat, all views: the concat's row index is (k + 1) / 6 for k < 6,
# in [0, 6]: its range is exactly one more than the divisor
model m(x: f32[8, 6], y: i32[8]) {
  param b: f32[1, 6] = normal(0.5)
  param c: f32[1, 6] = normal(0.5)
  a = concat(b, c, axis = 0)
  r = reshape(a, 12)
  s = r[1:7]
  return cross_entropy(x + s, y)
}

train m {
  data = synthetic(16)
  batch = 8
  optimizer = sgd(lr = 0.1)
  steps = 1
}
