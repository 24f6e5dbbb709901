# A top-level name is an import, a const or a def, not two of them (pass 52: the clash
# showed only at a use, "int 3 has no member 'linear'").
import nn
const nn = 3
const f = 2
def f(x: f32[..., n]) {
  return x
}
def nn(x: f32[..., n]) {
  return x
}
model m(x: f32[B, 8]) {
  return mean(nn.linear(x, 8))
}
