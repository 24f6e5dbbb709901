# Independent errors, all reported in one run; no cascades from one mistake.
import nn
model m(x: f32[B, 4], y: i32[B]) {
  a = nn.linear(x, 4) + undefined_one
  b = a * 2.0 + a
  c = nn.linear(x, 4, bogus = 1)
  d = nn.linear(x)
  e = nn.linear(x, 2.5)
  f = nn.layernorm(y)
  return cross_entropy(x, y)
}
