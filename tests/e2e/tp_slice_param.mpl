# tp: a replicated param (b) sliced to meet a column-parallel product split in groups;
# its gradient is gathered back; the split h meets a replicated w2, so it is all-gathered
# (mplc --allow-gather). Must train exactly like tp = 1.
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 12] = normal(0.1) @shard(1, groups = 3)
  param b: f32[12] = normal(0.1)
  param w2: f32[12, 4] = normal(0.1)
  h = relu(x @ w + b)
  return cross_entropy(h @ w2, y)
}
train m {
  batch = 4
  optimizer = sgd(lr = 0.5)
  steps = 3
}
