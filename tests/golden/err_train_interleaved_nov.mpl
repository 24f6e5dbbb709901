# args: --emit=schedule
# interleaved without its v, and a v given to 1f1b.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  h = relu(x) @stage(0)
  return cross_entropy(h, y) @stage(1)
}
train m { schedule = interleaved }
