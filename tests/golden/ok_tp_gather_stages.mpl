# args: --emit=grad --allow-gather
# A split param that readers on two pipeline stages need whole (--allow-gather): each stage
# all-gathers it itself (one allgather @0, one @1), so its gradient lands on the stage that
# reads it (pass 105: sharing stage 0's gather trained the same numbers, with the whole
# value sent across the stage boundary, and no test saw it).
mesh(pp = 2, tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param g: f32[8, 8] = normal(0.3) @shard(1)
  param w: f32[8, 4] = normal(0.3)
  h = tanh(x @ cumsum(g, 1)) @stage(0)
  h = tanh(h @ cumsum(g, 1)) @stage(1)
  return cross_entropy(h @ w, y)
}
train m { batch = 4; microbatches = 2; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
