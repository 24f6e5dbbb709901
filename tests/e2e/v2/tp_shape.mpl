# Splits survive the shape ops of issue 13 along other axes: repeat (along the split
# axis too: it stays one block per rank), stack, expand, concat, slices and int
# indices of an activation split by a column-parallel product; then row-parallel
# products. No all-gather (tests/e2e/tp_v2.sh; golden grad_tp_shape).
mesh(tp = 2)
model m(x: f32[B, T, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[16, 4] = normal(0.3) @shard(0)
  param w3: f32[32, 4] = normal(0.3) @shard(0)
  h = tanh(x @ w1)                                 # [B, T, 16] split on 2
  r = repeat(h, 2, axis = 1)                       # [B, 2T, 16]
  s = stack(h, h * h, axis = 1)                    # [B, 2, T, 16]
  e = expand(reshape(h, B, 1, T, 16), B, 3, T, 16)
  c = concat(h, r[:, 1:4, :], axis = 1)            # [B, T + 3, 16]
  z = mean(r, axis = 1) + mean(mean(s, axis = 1), axis = 1) + mean(mean(e * e, axis = 1), axis = 1)
  z = z + mean(c, axis = 1) + h[:, 0, :] * h[:, 2, :] + mean(h[:, 1:3, :], axis = 1)
  r2 = repeat(h, 2, axis = -1)                     # [B, T, 32]: along the split axis
  return cross_entropy(z @ w2 + mean(r2 @ w3, axis = 1), y)
}
train m { batch = 4; seq = 5; optimizer = sgd(lr = 0.1, momentum = 0.9); steps = 3; seed = 3 }
