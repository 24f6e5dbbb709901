# args: --mesh tp=8
# 4 attention heads over tp = 8: the reshape into heads cannot keep the split, and the error
# says that the head count must divide by tp.
import nn

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 64, 32) as wte
  x = nn.block(x, 4) as h[0]
  return cross_entropy(nn.linear(x, 64) as head, targets)
}

train gpt {
  batch = 2
  seq = 8
}
