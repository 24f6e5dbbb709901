# tests/e2e/small_mlp.mpl in bf16 mixed precision (test_refstep checks its step against the reference).
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
  precision = bf16
}
