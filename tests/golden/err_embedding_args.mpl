# An embedding call missing an argument names its instance broken, so a use of wte.weight
# says nothing more (pass 71: a second error, unknown name 'wte').
model m(idx: i32[B, T], y: i32[B, T]) {
  x = embedding(idx, 256) as wte
  return cross_entropy(x @ transpose(wte.weight, 0, 1), y)
}
train m {
  data = synthetic(64)
  batch = 2
  seq = 8
  steps = 1
}
