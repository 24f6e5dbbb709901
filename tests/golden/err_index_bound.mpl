# args: -o /dev/null
# An i32 input that indexes more classes than an i32 can count (4e9 logits columns): a
# diagnostic at the input, not the job writer's "past a limit of mplrun's (input 1: bad bound)"
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4000000000] = normal(0.1)
  return cross_entropy(x @ w, y)
}

train m {
  data = synthetic(8)
  batch = 8
  optimizer = sgd(lr = 0.1)
  steps = 1
}
