# args: --emit=graph
# A loop whose @stage decreases along the data: one note saying so (pass 71: two notes
# at the same place, one per stage).
import nn
mesh(pp = 2)
model m(x: f32[B, 16], y: i32[B]) {
  for i in 0..4 @stage(1 - i / 2) {
    x = nn.linear(x, 16) as l[i]
  }
  return cross_entropy(x, y) @stage(1)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 1
}
