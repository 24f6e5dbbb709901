# Dropout on a value of no model input (a positional embedding): one mask for the step, the
# same in every micro-batch and replica, as the single micro-batch's (pass 60: each
# micro-batch drew its own mask, so 2 micro-batches trained another model: 6.5% off).
# tests/e2e/dropout.sh: 1, 2 and 4 micro-batches and dp = 2 within 1e-5.
import nn
model m(x: f32[B, 8, 16], y: i32[B, 8]) {
  h = x + dropout(embedding(arange(8), 8, 16) as wpe, 0.5)
  return cross_entropy(nn.linear(h, 10), y)
}
train m {
  batch = 8
  seq = 8
  microbatches = 1
  optimizer = sgd(lr = 0.5)
  steps = 2
}
