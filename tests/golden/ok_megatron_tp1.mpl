# @shard is a no-op when tp = 1 (the layout stays replicated).
def mlp(x: f32[..., d]) {
  param w1: f32[d, 4*d] = normal(0.02) @shard(1)   # column-parallel: each tp rank holds 4*d/tp columns
  param w2: f32[4*d, d] = normal(0.02) @shard(0)   # row-parallel: partial sums, one all-reduce after
  return gelu(x @ w1) @ w2
}

model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(mlp(x), y)
}
