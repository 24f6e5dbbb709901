# args: --emit=schedule
# Only interleaved takes a v.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  h = relu(x) @stage(0)
  return cross_entropy(h, y) @stage(1)
}
train m { schedule = 1f1b(2) }
