# Dropout on values split over tp (tests/e2e/dropout.sh): Megatron's column-parallel
# hidden layer, and a fused q|k|v split per group; the masks are tp = 1's.
model m(x: f32[B, 8, 16], y: i32[B, 8]) {
  param w1: f32[16, 64] = normal(0.2) @shard(1)             # column-parallel
  param w2: f32[64, 16] = normal(0.2) @shard(0)             # row-parallel
  param wqkv: f32[16, 48] = normal(0.2) @shard(1, groups = 3)
  param wo: f32[16, 16] = normal(0.2) @shard(0)
  h = x + dropout(gelu(x @ w1), 0.3) @ w2
  q, k, v = split(dropout(h @ wqkv, 0.2), 3, axis = -1)
  h = h + (q * sigmoid(k) + v) @ wo
  return cross_entropy(h[:, :, 0:10], y)
}

train m {
  batch = 8
  seq = 8
  microbatches = 2
  optimizer = sgd(lr = 0.1)
  steps = 3
}
