# sdpa (issue 13) in its forms, one training step against the float64 reference
# evaluator (tests/e2e/ops_v2.sh): grouped-query heads with a causal mask and fewer
# keys than queries, multi-query heads with more keys, plain multi-head attention
# with a given scale, a rank-3 q, k, v without batch axes, and a rank-5 one.
model m(x: f32[B, 5, 8], y: i32[B, 5]) {
  param wq: f32[8, 24] = normal(0.3)
  param wk: f32[8, 8] = normal(0.3)
  param wv: f32[8, 12] = normal(0.3)
  q = transpose(reshape(x @ wq, B, 5, 6, 4), 1, 2)                     # [B, 6, 5, 4]
  k = transpose(reshape(x[:, 0:4, :] @ wk, B, 4, 2, 4), 1, 2)          # [B, 2, 4, 4]
  v = transpose(reshape(x[:, 1:5, :] @ wv, B, 4, 2, 6), 1, 2)          # [B, 2, 4, 6]: hv = 6
  a = sdpa(q, k, v, causal = true)                                     # GQA, T = 5 > S = 4
  k1 = reshape(concat(x, x[:, 0:2, :], axis = 1) @ wk, B, 1, 7, 8)[..., 0:4]  # one kv head, S = 7
  v1 = reshape(concat(x, x[:, 0:2, :], axis = 1) @ wv, B, 1, 7, 12)[..., 6:12]
  b = sdpa(q, k1, v1, causal = true)                                   # MQA, T = 5 < S = 7
  c = sdpa(q, q, q * 0.5, scale = 0.3)                                 # MHA, not causal
  d = sdpa(q[0, :, :, :], k[0, :, :, :], v[0, :, :, :])                # [6, 5, 6]: rank 3
  e = sdpa(reshape(q, B, 2, 3, 5, 4), reshape(k, B, 2, 1, 4, 4), reshape(v, B, 2, 1, 4, 6))  # rank 5
  o = concat(a + b + reshape(e, B, 6, 5, 6), c, axis = -1) + expand(reshape(d, 1, 6, 5, 6), B, 6, 5, 6)[..., 0:1]
  logits = reshape(transpose(o, 1, 2), B, 5, 60)
  return cross_entropy(logits, y)
}
train m { batch = 2; seq = 5 }
