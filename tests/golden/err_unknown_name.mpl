# Unknown names, functions and members.
import nn
model m(x: f32[B, 4], y: i32[B]) {
  h = x + missing
  k = frobnicate(x)
  l = nn.nonexistent(x)
  return cross_entropy(x, y)
}
