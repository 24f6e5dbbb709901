# Issue 15's model: six 256-wide linear layers, then twelve chains of transcendental
# elementwise work, on two pipeline stages placed by the balancer, eight micro-batches.
# The cost model counts a transcendental as one FLOP per element; on a CPU it costs
# tens, so the modelled split is uneven when measured (tests/e2e/balance.sh).
import nn

const d = 256
const chains = 12

mesh(pp = 2)

model balance(x: f32[B, d], y: i32[B]) {
  for i in 0..6 {
    x = relu(nn.linear(x, d) as fc[i])
  }
  for i in 0..chains {
    x = x + 0.1 * tanh(gelu(x) * sigmoid(x) + exp(-abs(x)))
  }
  return cross_entropy(x, y)
}

train balance {
  data = synthetic(512)
  batch = 1024
  microbatches = 8
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3)
  steps = 6
  seed = 15
}
