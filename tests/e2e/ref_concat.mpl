# Made by hand (pass 106): tests/e2e/ops_v2.sh checks a step against the float64 reference
# (test_refstep), its gradients by finite differences: a concat whose first part needs no
# gradient (the model input: the second part's gradient is cut at its own offset), and a
# concat of 40 parts (autodiff's input mask holds 32: the parts past it still get theirs)
model m(x: f32[B, 3], y: i32[B]) {
  param w: f32[3, 4] = normal(0.5)
  h = concat(x, x @ w, axis = -1)
  param u: f32[7, 40] = normal(0.3)
  c = concat(split(tanh(h @ u), 40, axis = -1), axis = 0)
  param v: f32[7, 5] = normal(0.5)
  return cross_entropy(h @ v, y) + mean(c * c)
}
train m {
  batch = 4
  microbatches = 1
  seed = 3
}
