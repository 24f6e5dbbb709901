# A const whose value comes from a def that makes a param: an error (it compiled, adding a
# model param 'width_0.w' that nothing read).
import nn
def width() {
  param w: f32[4] = zeros
  return 16
}
const h = width()
model mlp(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(nn.linear(x, h), y)
}

train mlp { batch = 2 }
