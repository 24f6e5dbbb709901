# A concat of 28 inputs, one of them column-split at tp > 1: the sharding pass's tables
# by new op id were sized once and a wide op outgrew them ("internal error: shard: graph
# grew past 64 ops"; pass 50). tests/e2e/tp_v2.sh: params at tp = 2 and 4 match tp = 1.
model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 8] = normal(0.3) @shard(1)
  z = concat(x @ w, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, axis = 0)
  return cross_entropy(z[0:B, :] @ transpose(w, 0, 1), y)
}

train m {
  batch = 4
  steps = 3
  optimizer = sgd(lr = 0.1)
}
