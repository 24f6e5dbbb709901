# args: --emit=grad
# nn.linear (not sharded) after nn.col_linear would all-gather the column-parallel
# output inside nn.linear: the error is at the user's call, with a note at the stdlib
# line, once for the 3 layers of the loop.
import nn
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  h = x
  for i in 0..3 {
    h = nn.linear(nn.col_linear(h, 16) as up[i], 8) as down[i]
  }
  return cross_entropy(h, y)
}
