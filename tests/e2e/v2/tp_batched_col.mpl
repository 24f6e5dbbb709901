# tests/e2e/v2/tp_batched_col.mpl — column-parallel products with batched weights: a
# [3, 8, 16] weight split on its output columns against a replicated input broadcast
# over its batch axis, and one of [1, 8, 16]; then row-parallel batched products
# ([3, 16, 7] split on its rows) back to partial sums. Under tp the input is entered,
# not gathered, and no forward all-gather is needed (tests/e2e/tp_v2.sh).
model m(x: f32[B, T, 8], y: i32[B, T]) {
  param w: f32[3, 8, 16] = normal(0.2) @shard(-1)
  param b: f32[3, 1, 16] = normal(0.1) @shard(-1)
  param u: f32[1, 8, 16] = normal(0.2) @shard(2)
  param w2: f32[3, 16, 7] = normal(0.2) @shard(1)
  param u2: f32[16, 7] = normal(0.2) @shard(0)
  x4 = reshape(x, B, 1, T, 8)
  h = relu(x4 @ w + b)
  g = gelu(expand(x4, B, 3, T, 8) @ u)
  o = sum(h @ w2, axis = 1) + sum(g @ u2, axis = 1)
  return cross_entropy(o, y)
}

train m {
  batch = 4
  seq = 5
  optimizer = adamw(lr = 0.01)
  steps = 3
  seed = 11
}
