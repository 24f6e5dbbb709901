# A costly value that a row kernel reads across its rows (tests/unit/test_refstep.c against
# the float64 reference): the softmax of transpose(e) reads e in every row of the kernel, so
# e must not be stored in the row kernel's first loop and read back there (the other rows
# are other outer iterations, not yet stored); read in its own row (the loss), it could be.
import nn

mesh(pp = 1)

model tr(x: f32[8, 8], y: i32[8]) {
  h = nn.linear(x, 8)
  e = exp(h) * 0.5
  s = softmax(transpose(e, 0, 1))
  return cross_entropy(s * 4.0 + e, y)
}

train tr {
  data = synthetic(16)
  batch = 8
  optimizer = sgd(lr = 0.1)
  steps = 1
}
