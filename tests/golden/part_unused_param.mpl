# args: --emit=partition
# A param nothing reads is kept on stage 0 (initialised, saved, never updated).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.02)
  param unused: f32[4] = ones
  return cross_entropy(x @ w, y)
}
train m { batch = 2 }
