# NAME.param must name a param of an earlier instance.
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 10, 4) as wte
  a = wte.bias
  b = wpe.weight
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets)
}
train m { batch = 2; seq = 3 }
