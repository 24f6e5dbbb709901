# Made by hand (pass 113): conv2d with kernels that are not square (3x2 with stride 2 and
# padding 1, 1x3), whose height and width a mix-up in im2col or col2im would swap (only one
# random seed had such a kernel); and a [1, C] param broadcast into a rank-3 value, whose
# gradient sums a rank-3 value down to [1, C]. ops_v2.sh checks one step against the
# float64 reference (test_refstep; MPL_REFSTEP_FD=1 adds finite differences).
model m(x: f32[B, 3, 7, 6], y: i32[B]) {
  param wr: f32[4, 3, 3, 2] = normal(0.2)
  h = tanh(conv2d(x, wr, stride = 2, padding = 1))   # [B, 4, 4, 4]
  param ws: f32[4, 4, 1, 3] = normal(0.3)
  h2 = conv2d(h, ws)                                 # [B, 4, 4, 2]
  param p: f32[1, 4] = normal(0.5)
  q = transpose(reshape(h2, B, 4, 8), 1, 2) * p      # [B, 8, 4]
  return cross_entropy(mean(q, axis = 1) * 4.0, y)
}
train m {
  batch = 2
  optimizer = sgd(lr = 0.1)
}
