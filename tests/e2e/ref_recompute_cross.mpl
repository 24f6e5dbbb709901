# Made by pass 114 (mutation testing of partition.c): a @recompute value read by the backward
# of its own stage and by the next stage's (which must read its transferred copy: a mutant
# that read the clone stopped mplc). ops_v2.sh: one step against the reference.
import nn
mesh(pp = 2)
model m(x: f32[B, 32], y: i32[B]) {
  h = tanh(nn.linear(x, 32) as l0) @stage(0) @recompute
  h = nn.linear(h, 32) as l1 @stage(1)
  return cross_entropy(h, y)
}
train m {
  data = synthetic(16)
  batch = 16
  microbatches = 2
  steps = 2
}
