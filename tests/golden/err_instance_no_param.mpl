# a failed instance ('bad': a zero dimension) is reported once, where it fails; a missing
# param of an instance that did not fail ('wte' has no bias) is still an error beside it
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 16, 8) as wte
  y = embedding(idx, 16, 0) as bad
  return cross_entropy(x @ transpose(wte.bias, 0, 1), targets)
}
train m { seq = 4 }
