# An instance index is 0 or more: as g[-1] named params g.-1.weight.
import nn
model m(x: f32[B, 8], y: i32[B]) {
  h = nn.linear(x, 8) as g[-1]
  return cross_entropy(h, y)
}
