# args: --emit=graph
# A def held in a variable is called like the def (pass 52: "'g' is a def, not a
# function"); the instance is named after the def (linear_0).
import nn
model m(x: f32[B, 8]) {
  g = nn.linear
  return mean(g(x, 4))
}
