# pp > 1 and no @stage anywhere: stages are left to the balancer.
import nn
mesh(pp = 2)

model m(x: f32[B, 8], y: i32[B]) {
  for i in 0..4 {
    x = nn.linear(x, 8) as h[i]
  }
  return cross_entropy(x, y)
}
