# sdpa of a replicated q against k and v split on the head axis (8 query heads, 4 kv
# heads, causal): q is cut to each rank's heads, as a replicated k or v is against a
# split q, instead of a refusal ("sdpa needs its input replicated"; pass 46).
# tests/e2e/tp_v2.sh: no all-gather, params at tp = 2 and 4 match tp = 1.
model m(x: f32[B, 4], y: i32[B]) {
  param q: f32[1, 8, 3, 4] = normal(0.5)
  param k: f32[1, 4, 5, 4] = normal(0.5) @shard(1)
  param v: f32[1, 4, 5, 4] = normal(0.5) @shard(1)
  param c: f32[1, 8, 3, 4] = normal(0.5)
  o = sdpa(q, k, v, causal = true)
  return sum(o * c) + mean(x) * 0.0 + mean(cast(y, f32)) * 0.0
}

train m {
  batch = 2
  steps = 3
  optimizer = sgd(lr = 0.1)
}
