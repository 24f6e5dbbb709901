# tests/e2e/ops_v2_elementwise.mpl — the v2 elementwise ops in one training step: sin, cos,
# floor (no gradient), silu, and % on tensors (f32 with a constant and with a tensor divisor,
# whose gradient is -floor(a / b); i32 with a constant divisor and with a data-dependent one,
# which is checked at run time); i32 / with negative quotients (toward zero: -9 / 4 is -2);
# a bool input (synthetic data draws 0 or 1) selecting with where.
import nn

model m(x: f32[B, 16], k: i32[B, 4], y: i32[B], keep: bool[B, 16]) {
  h = nn.linear(x, 16) as l1
  g = nn.linear(x, 16) as l2
  a = where(keep, sin(h), cos(2.0 * h)) + silu(h)
  b = h % 0.7 + (h * 3.0) % -1.3 + floor(h * 2.0) * 0.25
  c = h % (sigmoid(g) + 0.5) - g % -0.9
  j = (k * 7 + 2) % 5 + (k + 3) % (k + 1)
  e = sum(embedding(j, 8, 16) as emb, axis = 1)
  q = cast((k * 7 - 9) / 4 + (k - 5) / (0 - 3), f32)
  return cross_entropy(nn.linear(a + b * h + c + e + sum(q, axis = 1, keepdims = true) * 0.05, 4) as out, y)
}

train m {
  batch = 8
  steps = 3
  optimizer = sgd(lr = 0.1)
}
