# args: --emit=graph
# A statement after a return is never run: warned, once (pass 71: a param declared there
# was dropped without a word).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1)
  return cross_entropy(x @ w, y)
  param v: f32[4, 4] = normal(0.1)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 1
}
