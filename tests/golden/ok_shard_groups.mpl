# @shard(dim, groups = g): a fused q|k|v weight split per group over tp.
mesh(tp = 2)

model m(x: f32[B, 8], y: i32[B]) {
  param qkv: f32[8, 24] = normal(0.02) @shard(1, groups = 3)
  param out: f32[24, 5] = normal(0.02) @shard(0)
  return cross_entropy(x @ qkv @ out, y)
}
