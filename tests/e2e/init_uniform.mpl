# uniform(a, b) gives values in [a, b), as torch.nn.init.uniform_: a draw within 2^-25 of 1
# rounded up to b in f32 (pass 60: w[510017] was exactly 1.0 at seed 0). observe.sh.
model m(x: f32[B, 4]) {
  param w: f32[600000] = uniform(0.0, 1.0)
  return sum(w * 0.0) + mean(x) * 0.0
}
train m {
  batch = 8
  optimizer = sgd(lr = 1.0)
  steps = 1
}
