# examples/mlp.mpl — a 784-1024-1024-10 MLP (MNIST-sized) on two pipeline stages,
# trained on synthetic data with 4 micro-batches under 1F1B.
import nn

mesh(pp = 2)

model mlp(x: f32[B, 784], y: i32[B]) {
  h = relu(nn.linear(x, 1024)) @stage(0)
  h = relu(nn.linear(h, 1024)) @stage(1)
  logits = nn.linear(h, 10) @stage(1)
  return cross_entropy(logits, y)
}

train mlp {
  data = synthetic(1024)
  batch = 256
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, weight_decay = 0.0)
  steps = 100
  seed = 0
}
