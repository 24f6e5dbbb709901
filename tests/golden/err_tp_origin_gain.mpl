# args: --emit=grad --mesh tp=2
# z's split comes from the gain g's @shard(0): w1's column split is summed away by the
# row-parallel w2 (a partial sum, reduce-scattered to g's split). The note once named
# w1, following the partial sum back (pass 50).
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1)
  param w2: f32[16, 8] = normal(0.3) @shard(0)
  param g: f32[8] = ones @shard(0)
  z = (gelu(x @ w1) @ w2) * g
  return cross_entropy(z, y)
}
train m { batch = 8 }
