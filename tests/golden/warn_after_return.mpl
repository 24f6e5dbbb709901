# args: --emit=graph
# A statement after a return is never run: warned, once (pass 71: a param declared there
# was dropped without a word); a def's, once however many times it is called (pass 111).
def twice(x: f32[B, 4]) -> f32[B, 4] {
  return x * 2.0
  z = x + 1.0
}
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1)
  return cross_entropy(twice(twice(x)) @ w, y)
  param v: f32[4, 4] = normal(0.1)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 1
}
