# An MLP on two pipeline stages (the README's example, made small).
import nn

mesh(pp = 2)

model mlp(x: f32[B, 16], y: i32[B]) {
  h = relu(nn.linear(x, 32)) @stage(0)
  h = relu(nn.linear(h, 32)) @stage(1)
  logits = nn.linear(h, 10)
  return cross_entropy(logits, y)
}

train mlp {
  data = synthetic(64)
  batch = 12
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3)
  steps = 2
}
