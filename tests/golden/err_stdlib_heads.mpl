# A heads count that does not divide the width fails inside nn.attention: the error
# is at the user's call, once, with a note at the stdlib line.
import nn
model m(x: f32[B, 8, 16], y: i32[B, 8]) {
  h = nn.attention(x, 5)
  return cross_entropy(h, y)
}
