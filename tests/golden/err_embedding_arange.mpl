# A position table shorter than the sequence (seq 32, 16 rows): the arange of positions
# runs past the table, an error at compile time (PyTorch raises at run time).
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 256, 32) as wte
  x = x + embedding(arange(T), 16, 32) as wpe
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets)
}
train m { batch = 4; seq = 32; steps = 3 }
