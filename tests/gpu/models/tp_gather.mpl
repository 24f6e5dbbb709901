# tests/gpu/models/tp_gather.mpl — a tensor-parallel model whose collectives include tp_slice and
# allgather (a param split in groups, a replicated product sliced to match, a gather
# before the loss): the device-copy paths of tp collectives (runtime/exec.c) are checked with it.
mesh(tp = 2)

model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 12] = normal(0.2) @shard(1, groups = 3)
  param v: f32[8, 12] = normal(0.2)
  h = relu(x @ w) * (x @ v)
  return cross_entropy(h, y)
}

train m {
  data = synthetic(64)
  batch = 16
  microbatches = 2
  optimizer = adamw(lr = 1e-2)
  grad_clip = 0.5
  steps = 3
  seed = 3
}
