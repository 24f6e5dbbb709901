# Errors inside the stdlib, reached through the user's own def in a loop: each is at
# the user's call into the stdlib (once for all iterations), with a note at the stdlib
# line (naming the chain of stdlib calls) and one where the user's def is called.
import nn
def layer(x: f32[B, T, d], heads: int) -> f32[B, T, d] {
  a = nn.block(x, heads) as blk
  b = nn.linear(x, 0) as bad
  return a + b
}
model m(x: f32[B, 8, 16], y: i32[B, 8]) {
  for i in 0..2 {
    x = layer(x, 3) as l[i]
  }
  return cross_entropy(x, y)
}
