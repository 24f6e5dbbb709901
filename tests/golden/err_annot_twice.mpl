# A statement with two placements (@stage twice, @stage and @device): an error at the second,
# not the last one winning.
import nn
mesh(pp = 2)
model m(x: f32[B, 64], y: i32[B]) {
  h = nn.linear(x, 64) as a @stage(1) @stage(0)
  h = nn.linear(h, 64) as b @stage(1) @device(1)
  return cross_entropy(h, y) @stage(1)
}
train m {
  batch = 8
  optimizer = sgd(lr = 0.1)
}
