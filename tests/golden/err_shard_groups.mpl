# @shard's groups at most the dimension (2^31 was cut to an int: the grouping dropped).
mesh(tp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 8] = zeros @shard(1, groups = 2147483648)
  return cross_entropy(x @ w, y)
}

train m { batch = 2 }
