# args: --emit=graph --mesh tp=4,dp=2
# --mesh overrides the program's mesh axis by axis; batch 16 / (1 * dp 2) = 8 rows.
def mlp(x: f32[..., d]) {
  param w1: f32[d, 4*d] = normal(0.02) @shard(1)   # column-parallel: each tp rank holds 4*d/tp columns
  param w2: f32[4*d, d] = normal(0.02) @shard(0)   # row-parallel: partial sums, one all-reduce after
  return gelu(x @ w1) @ w2
}

mesh(pp = 1, tp = 2)

model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(mlp(x), y)
}

train m { batch = 16 }
