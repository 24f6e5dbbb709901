# args: --emit=grad
# An op whose two inputs would both be re-gathered is one error (not one per input),
# with a note for each @shard involved.
mesh(tp = 2)
model m(x: f32[8, 8], y: i32[8]) {
  param w: f32[8, 8] = normal(0.02) @shard(1)
  param v: f32[8, 8] = normal(0.02) @shard(0)
  h = (x @ w) * v
  return cross_entropy(h, y)
}
