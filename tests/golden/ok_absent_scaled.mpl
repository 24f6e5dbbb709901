# args: --emit=graph
# An absent optional param stays absent through arithmetic with numbers: with use_bias =
# false, x @ weight + bias * 0.5 is x @ weight (it was x @ weight + 0.5), as a None bias
# adds nothing in PyTorch.
def lin(x: f32[B, n], out: int, use_bias: bool) -> f32[B, out] {
  param weight: f32[n, out] = normal(0.1)
  param bias: f32[out] = zeros if use_bias
  return x @ weight + bias * 0.5 - 2.0 * bias
}

model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(lin(x, 3, false) as fc, y)
}

train m {
  batch = 4
}
