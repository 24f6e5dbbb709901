# args: --emit=kernels --no-remat
# A transcendental chain before the loss, its values kept for the backward (--no-remat):
# the loss's row kernel stores them in a first loop and its max and sum loops load the
# chain's last value, so each exp and tanh of the chain is computed once per element, not
# once in each of the kernel's three loops.
mesh(pp = 1)

model chain(x: f32[B, 8], y: i32[B]) {
  h = x + 0.5 * tanh(exp(-abs(x)))
  return cross_entropy(h, y)
}

train chain {
  data = synthetic(16)
  batch = 4
  optimizer = sgd(lr = 0.1)
  steps = 1
}
