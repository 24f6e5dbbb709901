# args: --emit=graph --microbatches 4 --schedule=gpipe
mesh(pp = 2)

model m(x: f32[B, 4], y: i32[B]) {
  param w1: f32[4, 4] = normal(0.02)
  param w2: f32[4, 4] = normal(0.02)
  param w3: f32[4, 3] = normal(0.02)
  h = relu(x @ w1) @stage(0)
  h = relu(h @ w2) @stage(1)
  return cross_entropy(h @ w3, y) @stage(1)
}

train m { batch = 8; microbatches = 2 }
