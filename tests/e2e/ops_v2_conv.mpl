# tests/e2e/ops_v2_conv.mpl — conv2d in one training step: 3x3 convolutions with padding 1
# and with stride 2 (a small CNN), and a ViT's patch embedding (stride = kernel = 4).
import nn

def conv(x: f32[N, C, H, W], out: int, k: int, stride: int = 1, padding: int = 0) {
  param weight: f32[out, C, k, k] = normal(0.1)
  return conv2d(x, weight, stride = stride, padding = padding)
}

model m(x: f32[B, 3, 16, 16], y: i32[B]) {
  h = relu(conv(x, 8, 3, padding = 1) as c1)
  h = conv(h, 6, 3, stride = 2) as c2
  p = conv(x, 12, 4, stride = 4) as patch
  z = mean(mean(h, axis = 3), axis = 2)
  t = mean(transpose(reshape(p, B, 12, 16), 1, 2), axis = 1)
  return cross_entropy(nn.linear(concat(z, t, axis = 1), 4) as out, y)
}

train m {
  batch = 4
  steps = 3
  optimizer = sgd(lr = 0.1)
}
