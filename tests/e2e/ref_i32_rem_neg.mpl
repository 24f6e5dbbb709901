# Made by pass 116: i32 % of negative dividends (the sign of the divisor, as torch.remainder);
# an unsigned remainder passed every other suite. ops_v2.sh: one step against the reference.
import nn

model m(x: f32[B, 8], k: i32[B, 4], y: i32[B]) {
  h = nn.linear(x, 4) as l1
  q = cast((k - 9) % 4 + (0 - k - 1) % 3 + (k - 9) % (0 - 4), f32)
  return cross_entropy(h * (1.0 + 0.1 * sum(q, axis = 1, keepdims = true)), y)
}

train m {
  batch = 8
  steps = 1
  optimizer = sgd(lr = 0.1)
}
