# tests/parity/v2/cnn.mpl — a small CNN for the PyTorch parity check (tests/parity/run_v2.sh):
# 3x8x8 synthetic images, conv2d 3x3 padding 1 (3 -> 8 channels) with a bias, relu, conv2d
# 3x3 stride 2 padding 1 (8 -> 16, 4x4) with a bias, relu, the mean over space, a linear head
# to 10 classes. Batch 4 in 2 micro-batches, 3 AdamW steps on synthetic(16).
# tests/parity/torch_v2.py is its float64 twin.
import nn

const channels = 3
const image = 8
const c1 = 8
const c2 = 16
const classes = 10

model cnn(x: f32[B, channels, image, image], y: i32[B]) {
  param conv1: f32[c1, channels, 3, 3] = normal(0.2)
  param bias1: f32[c1] = zeros
  param conv2: f32[c2, c1, 3, 3] = normal(0.1)
  param bias2: f32[c2] = zeros
  h = relu(conv2d(x, conv1, padding = 1) + reshape(bias1, 1, c1, 1, 1))
  h = relu(conv2d(h, conv2, stride = 2, padding = 1) + reshape(bias2, 1, c2, 1, 1))
  h = mean(reshape(h, B, c2, (image / 2) * (image / 2)), axis = -1)
  return cross_entropy(nn.linear(h, classes) as head, y)
}

train cnn {
  data = synthetic(16)
  batch = 4
  microbatches = 2
  optimizer = adamw(lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1)
  steps = 3
  seed = 13
}
