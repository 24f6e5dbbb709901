# a row-parallel product whose operands split the contracted dimension differently:
# h's columns in 2 groups (from w1), w2's rows in one block
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param w1: f32[8, 16] = normal(0.3) @shard(1, groups = 2)
  param w2: f32[16, 4] = normal(0.3) @shard(0)
  h = gelu(x @ w1)
  return cross_entropy(h @ w2, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.2, momentum = 0.9); steps = 3; seed = 5 }
