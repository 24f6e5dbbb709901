# A value sent back to an earlier stage, read inside nn.linear: the error is at the
# user's call, with a note at the stdlib line.
import nn
mesh(pp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  h = nn.linear(x, 8) as a @stage(1)
  z = nn.linear(h, 4) as b @stage(0)
  return cross_entropy(z, y) @stage(1)
}
