# Unknown names offer the nearest known one, or the language's form of a PyTorch name
# (pass 71: 'unknown name' alone): nn.Linear, linear after import nn, keepdim, dim,
# float32, a misspelt const, True.
import nn
const hidden = 16
model m(x: f32[B, 4], y: i32[B]) {
  h = nn.Linear(x, 8)
  h2 = linear(x, 8)
  z = mean(x, axis = -1, keepdim = true)
  q = mean(x, dim = 1)
  c = cast(x, float32)
  k = hiden
  u = nn.lienar(x, 8)
  return cross_entropy(nn.linear(x, 4, use_bias = True), y)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 1
}
