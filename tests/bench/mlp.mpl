# tests/bench/mlp.mpl — the MLP bench model: 784-1024-1024-10, batch 256, AdamW, on
# synthetic data. No @stage: `mplc --mesh pp=2` lets the balancer split it.
import nn

model mlp(x: f32[B, 784], y: i32[B]) {
  h = relu(nn.linear(x, 1024))
  h = relu(nn.linear(h, 1024))
  logits = nn.linear(h, 10)
  return cross_entropy(logits, y)
}

train mlp {
  data = synthetic(1024)
  batch = 256
  microbatches = 1
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, weight_decay = 0.01)
  steps = 10
}
