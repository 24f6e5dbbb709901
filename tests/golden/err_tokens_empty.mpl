# tokens("") names no file.
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 256, 8) as wte
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets)
}
train m { data = tokens(""); seq = 8 }
