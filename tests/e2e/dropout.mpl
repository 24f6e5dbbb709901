# Dropout on both pipeline stages (the compiler balances the layers), for
# tests/e2e/dropout.sh: its masks must not depend on the number of micro-batches,
# data-parallel replicas or pipeline stages.
import nn

mesh(pp = 2)

model m(x: f32[B, 8, 16], y: i32[B, 8]) {
  h = dropout(x, 0.2)
  h = h + nn.linear(dropout(gelu(nn.linear(h, 32)), 0.3), 16)
  h = dropout(nn.layernorm(h), 0.1)
  return cross_entropy(nn.linear(h, 10), y)
}

train m {
  batch = 8
  seq = 8
  microbatches = 4
  optimizer = sgd(lr = 0.1)
  steps = 3
}
