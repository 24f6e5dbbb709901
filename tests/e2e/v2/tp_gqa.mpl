# Grouped-query attention under tp (issue 13): q, k and v column-parallel (heads split),
# a rotate-half shuffle of slices and concat on the head axis (nn.rope's shape, with
# tanh and sigmoid standing in for sin and cos), sdpa with 8 query and 4 kv heads, the
# same attention again with k and v repeated per query head, and a row-parallel output.
# Every split survives: no all-gather (tests/e2e/tp_v2.sh; golden grad_tp_gqa).
mesh(tp = 2)
model m(x: f32[B, T, 32], y: i32[B, T]) {
  param wq: f32[32, 32] = normal(0.2) @shard(1)     # 8 heads of 4
  param wk: f32[32, 16] = normal(0.2) @shard(1)     # 4 kv heads
  param wv: f32[32, 16] = normal(0.2) @shard(1)
  param wo: f32[32, 32] = normal(0.2) @shard(0)
  q = transpose(reshape(x @ wq, B, T, 8, 4), 1, 2)  # [B, 8, T, 4] split on the heads
  k = transpose(reshape(x @ wk, B, T, 4, 4), 1, 2)
  v = transpose(reshape(x @ wv, B, T, 4, 4), 1, 2)
  a = reshape(cast(arange(T), f32), T, 1) * reshape(cast(arange(2), f32), 1, 2)
  q1, q2 = split(q, 2, axis = -1)
  q = concat(q1 * sigmoid(a) - q2 * tanh(a), q2 * sigmoid(a) + q1 * tanh(a), axis = -1)
  y1 = sdpa(q, k, v, causal = true)
  y2 = softmax(where(causal_mask(T), q @ transpose(repeat(k, 2, axis = 1), -2, -1) * 0.5, -inf), axis = -1) @ repeat(v, 2, axis = 1)
  o = reshape(transpose(y1 + y2, 1, 2), B, T, 32) @ wo
  return cross_entropy(o, y)
}
train m { batch = 4; seq = 6; optimizer = sgd(lr = 0.5, momentum = 0.9); steps = 3; seed = 3 }
