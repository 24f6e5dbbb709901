# Made by pass 113 (mutation testing of the fusion code); ops_v2.sh checks one step against
# the float64 reference. Its mutant K02 passed every other suite.
# a slice of a reshape of a concat, all views: the concat's row index is (k + 5) / 6 for k < 8,
# whose range [0, 3) is not a multiple of 6's
model m(x: f32[8, 8], y: i32[8]) {
  param b: f32[2, 6] = normal(0.5)
  param c: f32[2, 6] = normal(0.5)
  a = concat(b, c, axis = 0)
  r = reshape(a, 24)
  s = r[5:13]
  return cross_entropy(x + s, y)
}

train m {
  data = synthetic(16)
  batch = 8
  optimizer = sgd(lr = 0.1)
  steps = 1
}
