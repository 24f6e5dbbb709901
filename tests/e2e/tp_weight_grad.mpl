# Under tp, a replicated param broadcast against split values on two stages (sc below):
# its tp_enter is one op for both, so its gradient comes back from the later stage, weight
# work under zb that must travel with the input gradients. mplc stopped with an internal
# error at tp = 2 with pp = 2 or 3 under zb, and at pp = 1 under zbv (pass 38); parallel.sh
# checks those meshes against tp = pp = 1.
model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 12] = normal(0.3) @shard(1)
  param sc: f32[1] = normal(0.3)
  param w2: f32[12, 8] = normal(0.3) @shard(0)
  param w4: f32[8, 12] = normal(0.3) @shard(1)
  param w3: f32[12, 4] = normal(0.3) @shard(0)
  h = tanh(x @ w) * sc
  h = tanh(h @ w2)
  h = tanh(h @ w4) * sc
  return cross_entropy(h @ w3, y)
}

train m {
  batch = 8
  microbatches = 2
  schedule = zb
  optimizer = sgd(lr = 0.5)
  steps = 3
}
