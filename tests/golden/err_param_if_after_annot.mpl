# args: --emit=graph --mesh tp=2
# A param's 'if cond' written after its annotation: the syntax error says where it goes.
model m(x: f32[B, 6], y: i32[B]) {
  param w: f32[6, 4] = normal(0.1) @shard(0) if false
  return cross_entropy(x @ w, y)
}
