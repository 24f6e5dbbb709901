# args: --emit=schedule
# interleaved's v in the train block: at most 64.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  h = relu(x) @stage(0)
  return cross_entropy(h, y) @stage(1)
}
train m { schedule = interleaved(65) }
