# A token model that reads only its targets (idx unused): no op bounds idx, so its tokens
# are not held to a vocabulary (they were held to [0, 2), the synthetic default).
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(targets, 256, 8) as emb
  return cross_entropy(x @ transpose(emb.weight, 0, 1), targets)
}
train m {
  data = tokens("examples/data/tiny.bin")
  batch = 4
  seq = 16
  steps = 2
}
