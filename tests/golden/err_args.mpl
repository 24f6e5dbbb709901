# Wrong arguments to defs and built-ins.
import nn
model m(x: f32[B, 4], y: i32[B]) {
  a = nn.linear(x, 4, true, 5)
  b = softmax(x, axis = 1, dim = 0)
  c = cast(x, float32)
  d = pow(x, x)
  e = nn.linear(x, out = 4, out = 5)
  f = where(x, x, x)
  return cross_entropy(x, y)
}
