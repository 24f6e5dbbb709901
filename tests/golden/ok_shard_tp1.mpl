# @shard under tp = 1 splits nothing (the graph shows repl), and groups may equal the
# dimension's size (pass 111: mutants split under tp = 1, or refused groups = 4 of 4)
mesh(tp = 1)
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1) @shard(1)
  param u: f32[4, 4] = normal(0.1) @shard(1, groups = 4)
  return cross_entropy(x @ w + x @ u, y)
}
train m { batch = 2 }
