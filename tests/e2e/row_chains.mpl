# Costly elementwise chains inside row kernels (tests/unit/test_refstep.c against the float64
# reference): a tanh/exp/sigmoid chain before a softmax, a layer norm and the loss, which
# fusion stores in the row kernels' first loops (kept for the backward, or kept because
# several of a kernel's loops read them) and loads in the others.
import nn

mesh(pp = 1)

model chain(x: f32[B, 16], y: i32[B]) {
  h = nn.linear(x, 16)
  h = h + 0.5 * tanh(exp(-abs(h))) * sigmoid(h)
  p = softmax(h)
  z = nn.layernorm(h * p + gelu(h))
  return cross_entropy(z * 3.0, y)
}

train chain {
  data = synthetic(16)
  batch = 4
  optimizer = sgd(lr = 0.1)
  steps = 1
}
