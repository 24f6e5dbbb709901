# @shard on a dimension not divisible by tp (or by tp * groups).
mesh(tp = 4)
model m(x: f32[B, 6], y: i32[B]) {
  param w: f32[6, 6] = normal(0.02) @shard(1)
  param q: f32[6, 12] = normal(0.02) @shard(1, groups = 3)
  param r: f32[6, 6] = normal(0.02) @shard(2)
  h = relu(x) @shard(0)
  return cross_entropy(h @ w @ q[..., 0:6] @ r, y)
}
