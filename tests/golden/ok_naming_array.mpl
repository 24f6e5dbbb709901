# `as h[i]` names instances h.0, h.1, ...; params: h.1.weight etc.
import nn

const layers = 3

model m(x: f32[B, 6], y: i32[B]) {
  for i in 0..layers {
    x = nn.linear(x, 6) as h[i]
  }
  x = x + h[1].bias
  return cross_entropy(x, y)
}
