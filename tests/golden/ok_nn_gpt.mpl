# The stdlib's configurable gpt.
import nn

model tiny(idx: i32[B, T], targets: i32[B, T]) {
  return nn.gpt(idx, targets, 64, 16, 8, 2, 1) as g
}

train tiny { batch = 2; seq = 8 }
