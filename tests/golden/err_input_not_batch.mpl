# A model input holds a micro-batch's rows: its first dimension is B (it compiled, and
# mplrun refused every such job).
model m(x: f32[B, 5], w: f32[5, 3], s: f32[], y: i32[B]) {
  return cross_entropy(x @ w + s, y)
}

train m { batch = 8; microbatches = 2 }
