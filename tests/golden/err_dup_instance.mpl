# Two instances with one name in one scope.
import nn
model m(x: f32[B, 4], y: i32[B]) {
  h = nn.linear(x, 4) as fc
  h = nn.linear(h, 4) as fc
  for i in 0..2 {
    h = nn.linear(h, 4) as blk
  }
  return cross_entropy(h, y)
}
