# Seven equal layers and a head on 3 stages, balanced automatically. The balancer counted
# every op's backward as twice its forward, but the first product reads the model's input
# (no input gradient: twice its forward in all, not three times), so it split 3 / 3 / 1 +
# head, 6.7% slower by the plan's own pass times than 3 / 2 / 2 + head (pass 56);
# tests/e2e/balance.sh checks the split.
import nn
mesh(pp = 3)
model m(x: f32[B, 256], y: i32[B]) {
  h = relu(nn.linear(x, 256) as l0)
  h = relu(nn.linear(h, 256) as l1)
  h = relu(nn.linear(h, 256) as l2)
  h = relu(nn.linear(h, 256) as l3)
  h = relu(nn.linear(h, 256) as l4)
  h = relu(nn.linear(h, 256) as l5)
  h = relu(nn.linear(h, 256) as l6)
  logits = nn.linear(h, 10) as out
  return cross_entropy(logits, y)
}
train m {
  data = synthetic(64)
  batch = 64
  microbatches = 4
  steps = 2
}
