# @stage(i) in a loop past the last stage is reported once, not for every iteration past it
# (a 64-layer loop on pp = 2 said it 62 times).
import nn
mesh(pp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  for i in 0..6 @stage(i) {
    x = nn.linear(x, 8) as l[i]
  }
  return cross_entropy(x, y) @stage(1)
}
