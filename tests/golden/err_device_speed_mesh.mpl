# args: --emit=plan --mesh pp=4 --device-speed 1,0.5
# The count is checked against the mesh in effect: --mesh pp=4 asks for four speeds.
import nn
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..4 {
    x = nn.linear(x, 4) as h[i]
  }
  return cross_entropy(x, y)
}
