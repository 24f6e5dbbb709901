# A value with no @stage whose inputs have none either runs on the stage of its first use
# (pass 111: on its last, t went to stage 1 and flowed back to stage 0): t is @0, read by
# stages 0 and 1
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1)
  t = x @ w
  a = tanh(t) @stage(0)
  b = a + t @stage(1)
  return cross_entropy(b, y) @stage(1)
}
train m {
  batch = 2
}
