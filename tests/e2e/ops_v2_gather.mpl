# tests/e2e/ops_v2_gather.mpl — gather (indices from data, checked at run time; repeated
# indices, whose gradients sum; indices smaller than x on another axis) and one_hot in one
# training step.
import nn

model m(x: f32[B, 8, 10], k: i32[B, 8, 3], j: i32[B, 4, 5], y: i32[B]) {
  h = nn.linear(x, 10) as l1
  g = gather(h, k, 2)
  r = gather(h, k % 4 + 2, 2)
  o = one_hot(k, 10)
  q = sum(o * reshape(h, B, 8, 1, 10), axis = 3)
  u = gather(h, j, 1)
  z = sum(g * r, axis = 2) + sum(q, axis = 2) + mean(sum(u, axis = 2), axis = 1, keepdims = true)
  return cross_entropy(nn.linear(z, 4) as out, y)
}

train m {
  batch = 8
  steps = 3
  optimizer = sgd(lr = 0.1)
}
