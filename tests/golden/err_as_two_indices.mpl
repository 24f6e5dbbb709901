# Nested loops naming instances as h[i][j]: the second subscript would index the call's
# result, so the parser refuses it and shows the one-index form and the parenthesised one.
import nn
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..2 {
    for j in 0..2 {
      x = nn.linear(x, 4) as h[i][j]
    }
  }
  return cross_entropy(x, y)
}
