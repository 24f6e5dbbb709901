# Annotations on blocks and for headers; the inner one overrides the outer one.
import nn
mesh(pp = 4)

model m(x: f32[B, 8], y: i32[B]) {
  x = x * 0.5 @stage(0)
  @stage(1) {
    x = nn.linear(x, 8) as first
    x = nn.linear(x, 8) as second @stage(2)
  }
  for i in 0..2 @stage(3) {
    x = nn.layernorm(x) as ln[i]
  }
  x = relu(x) @device(3)
  return cross_entropy(x, y)
}
