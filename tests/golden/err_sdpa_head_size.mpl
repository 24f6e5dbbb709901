# args: --emit=graph
# sdpa with q and k of different head sizes names that mismatch (pass 71: the general form only).
model m(x: f32[B, 4, 8, 16], y: i32[B]) {
  param wk: f32[16, 32] = normal(0.1)
  k = x @ wk
  o = sdpa(x, k, k)
  return cross_entropy(mean(mean(o, axis = 1), axis = 1)[:, 0:4], y)
}
train m {
  data = synthetic(64)
  batch = 2
  steps = 1
}
