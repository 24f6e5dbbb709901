# embedding (a built-in def with param weight), cross_entropy, dropout keys.
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 100, 16)
  x = dropout(x, 0.1)
  e2 = embedding(idx, 80, 16)
  x = dropout(x + e2, 0.2)
  x = dropout(x, 0.0)
  logits = x @ transpose(embedding_0.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train m { batch = 2; seq = 4 }
