# Statements whose values nothing needs, reading the loss (pass 83: `loss * 1000.0` or
# `exp(loss)` left unused, as a user logs a scaled loss or a perplexity, fused the loss into
# their kernel and the loss had no buffer: "value 9 has no buffer in this rank's arena"),
# on two stages, in a def and in the model.
import nn
mesh(pp = 2)
def head(h: f32[B, T, 16], w: f32[16, 32], targets: i32[B, T]) -> f32[] {
  s = cross_entropy(h @ w, targets)
  dead = s * 3.0
  return s
}
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 32, 16) as wte @stage(0)
  @stage(1) {
    h = relu(nn.linear(x, 16) as l1)
    param w: f32[16, 32] = normal(0.1)
    ce = head(h, w, targets)
    loss = ce + 1e-4 * sum(w * w)
    loss_scaled = loss * 1000.0
    ppl = exp(loss)
  }
  return loss
}
train m {
  batch = 4
  seq = 4
  microbatches = 2
  optimizer = sgd(lr = 0.1)
}
