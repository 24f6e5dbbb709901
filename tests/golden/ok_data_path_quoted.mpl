# args: --emit=graph
# The data path in the header is written as a string literal: a quote and a newline in it
# are escaped (pass 52: the line broke).
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 16, 8) as wte
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets)
}
train m {
  data = tokens("da\"ta\n.bin")
  batch = 2
  seq = 4
}
