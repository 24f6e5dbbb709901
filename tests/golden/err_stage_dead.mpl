# args: --mesh pp=3 --emit=graph
# A stage whose work the loss does not need (l2: only dead code on stage 2) is an error, as an
# empty stage is (pass 72: accepted, its rank received every micro-batch's input and idled).
import nn
model m(x: f32[B, 8, 16], y: i32[B, 8]) {
  a = nn.linear(x, 16) as l0 @stage(0)
  b = gelu(nn.linear(a, 16) as l1) @stage(1)
  z = nn.linear(b, 16) as l2 @stage(2)
  return cross_entropy(nn.linear(b, 10) as head, y) @stage(1)
}
train m {
  batch = 8
  seq = 8
  microbatches = 2
  optimizer = adamw(lr = 0.01)
  steps = 2
}
