# args: --emit=kernels
# A transcendental chain that nothing keeps, before a softmax and a loss in one row kernel:
# fusion stores the chain's last value h anyway (its first loop), so the kernel's five
# loops over the row (the softmax's max and sum, the loss's max and sum, the stores) load
# h instead of computing its exp and tanh five times (x is an input and there are no
# parameters: no backward).
mesh(pp = 1)

model chain(x: f32[B, 8], y: i32[B]) {
  h = x + 0.5 * tanh(exp(-abs(x)))
  p = softmax(h)
  return cross_entropy(h * p, y)
}

train chain {
  data = synthetic(16)
  batch = 4
  optimizer = sgd(lr = 0.1)
  steps = 1
}
