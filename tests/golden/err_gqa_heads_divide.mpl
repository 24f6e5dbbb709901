# nn.gqa_attention's heads must divide d (36 by 8 heads: the head size was truncated to 4
# and wq made [36, 32]): the reshape of the queries is refused, at the user's call
import nn
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 64, 36) as tok
  x = nn.gqa_attention(x, 8, 2) as att
  return cross_entropy(nn.linear(x, 64, false) as output, targets)
}
train m {
  seq = 8
}
