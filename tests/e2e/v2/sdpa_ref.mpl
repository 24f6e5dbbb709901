# sdpa against the textbook formula with k and v repeated per query head
# (torch.nn.functional.scaled_dot_product_attention with enable_gqa = True): the loss
# is the sum of the squared differences, so it must be 0 up to float32 rounding
# (tests/e2e/ops_v2.sh reads it from --metrics). The masks here are built from arange,
# independently of sdpa's lowering: query i sees key j when j <= i (top-left aligned).
model m(x: f32[B, 5, 8], y: i32[B]) {
  param wq: f32[8, 24] = normal(0.5)
  param wk: f32[8, 8] = normal(0.5)
  param wv: f32[8, 8] = normal(0.5)
  q = transpose(reshape(x @ wq, B, 5, 6, 4), 1, 2)                # [B, 6, 5, 4]: 6 query heads
  k = transpose(reshape(x[:, 0:4, :] @ wk, B, 4, 2, 4), 1, 2)     # [B, 2, 4, 4]: 2 kv heads, S = 4
  v = transpose(reshape(x[:, 1:5, :] @ wv, B, 4, 2, 4), 1, 2)
  kr = repeat(k, 3, axis = 1)                                     # kv head h / 3 for query head h
  vr = repeat(v, 3, axis = 1)
  mask = reshape(arange(4), 1, 4) <= reshape(arange(5), 5, 1)     # [T = 5, S = 4]
  ref = softmax(where(mask, q @ transpose(kr, -2, -1) * (1.0 / sqrt(4)), -inf), axis = -1) @ vr
  d1 = sdpa(q, k, v, causal = true) - ref
  ref2 = softmax(q @ transpose(kr, -2, -1) * 0.3, axis = -1) @ vr
  d2 = sdpa(q, k, v, scale = 0.3) - ref2
  q3 = q[:, :, 0:3, :]                                             # T = 3 < S = 4
  mask3 = reshape(arange(4), 1, 4) <= reshape(arange(3), 3, 1)
  ref3 = softmax(where(mask3, q3 @ transpose(kr, -2, -1) * 0.5, -inf), axis = -1) @ vr
  d3 = sdpa(q3, k, v, causal = true) - ref3
  k1 = k[:, 0:1, :, :]                                             # one kv head for all six
  ref4 = softmax(q @ transpose(expand(k1, B, 6, 4, 4), -2, -1) * 0.5, axis = -1) @ expand(v[:, 1:2, :, :], B, 6, 4, 4)
  d4 = sdpa(q, k1, v[:, 1:2, :, :]) - ref4
  return sum(d1 * d1) + sum(d2 * d2) + sum(d3 * d3) + sum(d4 * d4)
}
train m { batch = 2 }
