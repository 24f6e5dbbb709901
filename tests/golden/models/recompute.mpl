# @recompute on two stages: the blocks' activations are not stashed; their
# forward is run again inside the backward.
import nn

mesh(pp = 2)

model m(x: f32[B, 8], y: i32[B]) {
  h = nn.linear(x, 16) @stage(0)
  @recompute {
    h = gelu(nn.linear(h, 16)) @stage(0)
    h = gelu(nn.linear(h, 16)) @stage(1)
  }
  h = nn.linear(h, 4) @stage(1)
  return cross_entropy(h, y)
}

train m {
  data = synthetic(16)
  batch = 4
  microbatches = 2
  optimizer = sgd(lr = 0.1)
}
