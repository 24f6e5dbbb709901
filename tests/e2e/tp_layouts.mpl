# tp layouts beyond Megatron's pair of linears: a row-parallel product (a partial sum)
# meets a split gain, so it is reduce-scattered, not all-reduced; a mean and a sum over
# the split dimension are partial sums too; partial + partial stays partial. The loss
# needs no all-gather. Must train like tp = 1 (tests/e2e/tp_layouts.sh).
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)   # column-parallel: h split on 1
  param w2: f32[16, 8] = normal(0.3) @shard(0)   # row-parallel: h @ w2 is a partial sum
  param g: f32[8] = normal(1.0) @shard(0)        # split: (h @ w2) * g reduce-scatters
  param w3: f32[8, 4] = normal(0.3) @shard(0)    # row-parallel again
  h = gelu(x @ w1)
  z = (h @ w2) * g
  s = mean(z * z, axis = -1, keepdims = true)    # over the split dimension: partial
  logits = z @ w3 + s                            # partial + partial: one all-reduce (s is a
                                                 # row's constant: cross_entropy ignores it;
                                                 # tp_cases/keep_mean_split.mpl's mean counts)
  return cross_entropy(logits, y) + 0.01 * sum(z * z)
}
train m {
  batch = 8
  optimizer = sgd(lr = 0.2, momentum = 0.9)
  steps = 3
  seed = 5
}
