# args: --emit=grad
# A re-gather refused in a def that a loop runs 4 times is one error at its place,
# not one per layer (and not one per operand).
mesh(tp = 2)
def layer(x: f32[B, 8]) -> f32[B, 8] {
  param w: f32[8, 8] = normal(0.02) @shard(1)
  return softmax(x @ w, axis = -1)
}
model m(x: f32[B, 8], y: i32[B]) {
  h = x
  for i in 0..4 {
    h = layer(h) as l[i]
  }
  return cross_entropy(h, y)
}
