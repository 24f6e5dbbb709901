# A statement with two placements (@stage twice, @stage and @device), or a param with two
# splits (@shard twice: the last won, pass 38): an error at the second, not the last one
# winning.
import nn
mesh(pp = 2)
model m(x: f32[B, 64], y: i32[B]) {
  h = nn.linear(x, 64) as a @stage(1) @stage(0)
  h = nn.linear(h, 64) as b @stage(1) @device(1)
  param w: f32[64, 64] = normal(0.02) @shard(0) @shard(1)
  h = h @ w @stage(1)
  return cross_entropy(h, y) @stage(1)
}
train m {
  batch = 8
  optimizer = sgd(lr = 0.1)
}
