# args: --emit=graph --schedule interleaved(2) --microbatches 4
# interleaved(2) on pp = 2 gives stages 0..3.
mesh(pp = 2)

model m(x: f32[B, 4], y: i32[B]) {
  param w1: f32[4, 4] = normal(0.02)
  param w2: f32[4, 4] = normal(0.02)
  param w3: f32[4, 3] = normal(0.02)
  h = relu(x @ w1) @stage(0)
  h = relu(h @ w2) @stage(1)
  h = relu(h) @stage(2)
  return cross_entropy(h @ w3, y) @stage(3)
}

train m { batch = 8; microbatches = 2
  schedule = sequential }
