# A 10-block MLP whose 2048-wide blocks (0, 3, 6, 9) are 3.9x the others, balanced
# automatically under interleaved(4) at pp = 2: rank r runs stages r, r + 2, r + 4, r + 6.
# The per-stage split gave rank 0 all four wide blocks (predicted busy 0.102 s against
# 0.040 s, 65 MiB: past --mem-limit 60M, where a split by hand fits); the balancer now
# refines the cuts for the ranks (balance.c's il_refine; tests/e2e/balance.sh).
import nn
mesh(pp = 2)
model m(x: f32[B, 512], y: i32[B]) {
  h = x
  h = h + nn.linear(relu(nn.linear(h, 2048) as a0), 512) as b0
  h = h + nn.linear(relu(nn.linear(h, 512) as a1), 512) as b1
  h = h + nn.linear(relu(nn.linear(h, 512) as a2), 512) as b2
  h = h + nn.linear(relu(nn.linear(h, 2048) as a3), 512) as b3
  h = h + nn.linear(relu(nn.linear(h, 512) as a4), 512) as b4
  h = h + nn.linear(relu(nn.linear(h, 512) as a5), 512) as b5
  h = h + nn.linear(relu(nn.linear(h, 2048) as a6), 512) as b6
  h = h + nn.linear(relu(nn.linear(h, 512) as a7), 512) as b7
  h = h + nn.linear(relu(nn.linear(h, 512) as a8), 512) as b8
  h = h + nn.linear(relu(nn.linear(h, 2048) as a9), 512) as b9
  logits = nn.linear(h, 16) as out
  return cross_entropy(logits, y)
}
train m {
  data = synthetic(64)
  batch = 64
  microbatches = 8
  schedule = interleaved(4)
  steps = 2
}
