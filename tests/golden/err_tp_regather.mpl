# args: --emit=grad
# A softmax over the dimension a column-parallel product splits would need the whole
# value on every tp rank: a compile error naming the op, both layouts and the @shard
# it comes from (--allow-gather accepts it: ok_tp_allow_gather).
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 16] = normal(0.02) @shard(1)
  h = x @ w
  p = softmax(h, axis = -1)
  return cross_entropy(p, y)
}
