# tests/gpu/models/tp_gather.mpl — a tensor-parallel model whose collectives include every
# kind: tp_enter, tp_slice (a replicated product sliced to meet a param split in groups;
# its gradient all-gathered), reduce_scatter (a partial sum meeting a split gain) and
# all-reduce (partial sums, among them a sum over the split dimension). The device-copy
# paths of tp collectives (runtime/exec.c) are checked with it.
mesh(tp = 2)

model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 12] = normal(0.2) @shard(1, groups = 3)
  param v: f32[8, 12] = normal(0.2)
  param u: f32[8, 6] = normal(0.3) @shard(1)
  param w3: f32[6, 6] = normal(0.3) @shard(0)
  param g: f32[6] = normal(1.0) @shard(0)
  param w4: f32[6, 6] = normal(0.3) @shard(0)
  h = relu(x @ w) * (x @ v)
  s = sum(h, axis = -1, keepdims = true)
  z = ((x @ u) @ w3) * g
  return cross_entropy(z @ w4 + s, y)
}

train m {
  data = synthetic(64)
  batch = 16
  microbatches = 2
  optimizer = sgd(lr = 0.1)
  grad_clip = 0.5
  steps = 3
  seed = 3
}
