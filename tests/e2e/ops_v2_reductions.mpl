# tests/e2e/ops_v2_reductions.mpl — argmax, cumsum (f32, with its reverse-cumsum gradient,
# and i32) and topk (on the last axis and on a middle one; the gradient flows through the
# values) in one training step.
import nn

model m(x: f32[B, 6, 12], y: i32[B]) {
  h = nn.linear(x, 12) as l1
  c = cumsum(h, 1) + cumsum(h * h, -1)
  v, i = topk(h, 3)
  w, j = topk(c, 2, axis = 1)
  a = argmax(h, 2)
  s = cumsum(a, 1) % 8
  z = nn.linear(sum(v, axis = 2) + cast(a, f32) * 0.01, 12) as l2
  z = z + mean(c, axis = 1) + sum(w, axis = 1) + sum(embedding(s, 8, 12) as emb, axis = 1)
  g = sum(gather(h, i, 2), axis = 2, keepdims = true)
  z = z + mean(g * h, axis = 1) + mean(cast(j, f32), axis = 1)
  return cross_entropy(nn.linear(z, 4) as out, y)
}

train m {
  batch = 8
  steps = 3
  optimizer = sgd(lr = 0.1)
}
