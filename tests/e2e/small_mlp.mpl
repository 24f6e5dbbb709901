# A small MLP on two pipeline stages: the quick model of the end-to-end tests.
import nn

mesh(pp = 2)

model mlp(x: f32[B, 32], y: i32[B]) {
  h = relu(nn.linear(x, 64)) @stage(0)
  h = relu(nn.linear(h, 64)) @stage(1)
  logits = nn.linear(h, 10)
  return cross_entropy(logits, y)
}

train mlp {
  data = synthetic(64)
  batch = 16
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 1e-2)
  steps = 30
  seed = 3
}
