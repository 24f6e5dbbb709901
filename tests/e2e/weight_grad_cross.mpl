# Values made from params alone (a normalised weight, a transposed one) read on later
# stages: their gradients feed param gradients only (the weight pass's work under zb and
# zbv), yet must travel back to the stage that made them with the input gradients. mplc
# stopped with an internal error ("cannot travel 1 -> 0 with the gradients") under zb and
# zbv (pass 38); test_refstep checks them against the float64 reference at pp = 2.
mesh(pp = 2)

model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 8] = normal(0.3)
  param w2: f32[8, 4] = normal(0.3)
  param v: f32[8, 8] = normal(0.3)
  wn = w / sqrt(sum(w * w))
  vt = transpose(v, 0, 1) * 2.0
  h = relu(x @ wn)
  h = relu(h @ vt)
  h = relu(h @ wn)
  h = relu(h @ vt)
  return cross_entropy(h @ w2, y)
}

train m {
  batch = 8
  microbatches = 2
  schedule = zb
  optimizer = sgd(lr = 0.5)
}
