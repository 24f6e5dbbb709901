# A run of 20 tanh layers after one product (selective recomputation, compiler/remat.c):
# each tanh's output is what its gradient reads. mplc holds the first, remakes the next 8
# from it in the backward, holds the 10th (its chain would be 9 ops), and so on: 3 held.
import nn

model chain(x: f32[B, 16], y: i32[B]) {
  h = nn.linear(x, 16)
  for i in 0..20 {
    h = tanh(h)
  }
  return cross_entropy(nn.linear(h, 4), y)
}

train chain {
  data = synthetic(64)
  batch = 8
  microbatches = 2
  schedule = 1f1b
  optimizer = adamw(lr = 1e-2)
  steps = 3
}
