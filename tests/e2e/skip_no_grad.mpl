# Stage 0 has no params and feeds stage 2 past stage 1 (a skip connection): activations
# go 0 -> 1, 0 -> 2 and 1 -> 2, but a gradient only 2 -> 1. The schedule once put a
# gradient message on every stage edge (recv_grad on rank 0 from ranks 1 and 2, which
# the job dropped) and made each backward wait for them (pass 48). tests/e2e/schedules.sh:
# no gradient reaches stage 0, and pp = 3 under each schedule gives pp = 1's params.
import nn
const a = 0
const b = 1
const c = 2
model m(x: f32[B, 16], y: i32[B]) {
  h = x * 2.0 + 1.0 @stage(a)
  g = relu(nn.linear(h, 16) as l1) @stage(b)
  k = relu(nn.linear(g, 16) as l2) + h @stage(c)
  logits = nn.linear(k, 10) as head @stage(c)
  return cross_entropy(logits, y)
}
train m {
  data = synthetic(64)
  batch = 12
  microbatches = 4
  optimizer = adamw(lr = 1e-2)
  steps = 3
  seed = 3
}
