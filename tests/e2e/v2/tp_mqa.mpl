# Multi-query attention under tp (issue 14's fused sdpa): 4 query heads split over the tp
# ranks, one kv head replicated on every rank (wk and wv are not sharded); each rank's
# query heads read that kv head, so no all-gather anywhere (tests/e2e/tp_v2.sh).
mesh(tp = 2)
model m(x: f32[B, T, 16], y: i32[B, T]) {
  param wq: f32[16, 16] = normal(0.3) @shard(1)     # 4 heads of 4
  param wk: f32[16, 4] = normal(0.3)                # one kv head
  param wv: f32[16, 4] = normal(0.3)
  param wo: f32[16, 16] = normal(0.3) @shard(0)
  q = transpose(reshape(x @ wq, B, T, 4, 4), 1, 2)
  k = transpose(reshape(x @ wk, B, T, 1, 4), 1, 2)
  v = transpose(reshape(x @ wv, B, T, 1, 4), 1, 2)
  o = reshape(transpose(sdpa(q, k, v, causal = true), 1, 2), B, T, 16) @ wo
  return cross_entropy(o, y)
}
train m { batch = 2; seq = 5; optimizer = sgd(lr = 0.5, momentum = 0.9); steps = 3; seed = 5 }
