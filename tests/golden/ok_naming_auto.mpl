# Unnamed instances are CALLEE_K, counted per callee per scope; defs without
# params make no instance; nested instances give dotted names.
import nn

def pair(x: f32[..., n]) {
  a = nn.linear(x, n)
  b = nn.linear(a, n, use_bias = false)
  return nn.layernorm(b)
}

def act(x: f32[..., n]) {
  return gelu(x) * 2.0
}

model m(x: f32[B, 4], y: i32[B]) {
  h = pair(x)
  h = act(h)
  h = pair(h)
  h = nn.linear(h, 4) as head
  for i in 0..2 {
    h = nn.linear(h, 4)
  }
  return cross_entropy(h, y)
}
