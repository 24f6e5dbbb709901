# Row statistics broadcast back onto a square domain along another axis (tests/unit/
# test_refstep.c against the float64 reference). s without keepdims, [8], added to [8, 8]
# lands row j's sum at [i, j]; so does t, the keepdims sum reshaped to [1, 8]. A row kernel
# that kept exp(h) in its first loop for the current row only and read it back for every row
# in its later loops read rows not yet written (and on a GPU, other threads' rows).
import nn

mesh(pp = 1)

model bcast(x: f32[8, 8], y: i32[8]) {
  h = nn.linear(x, 8)
  v = exp(h)
  s = sum(v, axis = 1)
  t = reshape(sum(v * v, axis = 1, keepdims = true), 1, 8)
  w = v * 0.1 + s * 0.01 + t * 0.001
  return cross_entropy(w, y)
}

train bcast {
  data = synthetic(16)
  batch = 8
  optimizer = sgd(lr = 0.1)
  steps = 1
}
