# Weight tying: NAME.param is the same PARAM op, not a copy.
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 50, 8) as wte
  w = wte.weight
  logits = x @ transpose(w, 0, 1)
  logits = logits + x @ transpose(wte.weight, 1, 0)
  return cross_entropy(logits, targets)
}

train m { batch = 2; seq = 4 }
