# @recompute marks everything computed inside (not params or leaves).
import nn

model m(x: f32[B, 8], y: i32[B]) {
  @recompute {
    h = gelu(nn.linear(x, 8))
  }
  h = nn.linear(h, 4) @recompute
  return cross_entropy(h, y)
}
