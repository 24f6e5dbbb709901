# A param and an instance of one name in one scope are an error, in either order and for
# instance arrays ('fc.weight' would name the instance's param and a member of the param;
# they were both accepted). In different scopes the names are free.
import nn
def block(x: f32[..., 4]) -> f32[..., 4] {
  param fc: f32[4, 4] = normal(0.1)
  return x @ fc
}
model m(x: f32[B, 4], y: i32[B]) {
  param fc: f32[4, 4] = normal(0.1)
  h = nn.linear(x @ fc, 4) as fc
  g = nn.linear(h, 4) as proj
  param proj: f32[4, 4] = normal(0.1)
  param layers: f32[4, 4] = normal(0.1)
  for i in 0..2 {
    g = nn.linear(g, 4) as layers[i]
  }
  g = block(g) as fc2
  return cross_entropy(g, y)
}
train m {
  batch = 4
}
