# args: --emit=graph
# An input read whole bounds all its values (a token file is checked against the bound when
# opened); one read only through slices bounds those (synthetic data draws there, and each
# read gets a run-time check: pass 83 and 84).
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx[:, 0], 4, 8) as first
  param head: f32[8, 16] = normal(0.02)
  return cross_entropy(x @ head, reshape(targets, B * T)[0:B])
}
train m {
  batch = 2
  seq = 4
}
