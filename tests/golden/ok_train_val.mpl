# Validation: val, eval_every and eval_batches in the train line of --emit=graph.
const every = 25

model m(idx: i32[B, T], targets: i32[B, T]) {
  param w: f32[8, 8] = normal(0.02)
  return cross_entropy(embedding(idx, 8, 8) @ w, targets)
}
train m {
  data = tokens("data/train.bin")
  val = tokens("data/val.bin")
  eval_every = every * 2
  eval_batches = 4
  batch = 4
  seq = 8
  steps = 200
}
