# Hints for PyTorch habits in shapes and types (pass 71): a reduction that dropped the axis
# the other side needs (keepdims), a weight stored [out, in] as nn.Linear keeps it, an i32
# into exp; and a value a stdlib def made is noted at the user's call, not in nn.mpl.
import nn
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[10, 4] = normal(0.1)
  param extra: f32[8, 4] = normal(0.1)
  z = x - mean(x, axis = -1)
  q = x @ w
  e = exp(y)
  h = nn.linear(x, 10)
  return cross_entropy(h @ extra, y)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 1
}
