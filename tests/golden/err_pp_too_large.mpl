# args: --emit=schedule --mesh pp=257
# 300 top-level statements balance over 257 stages, but a schedule takes at most 256.
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..300 {
    x = relu(x)
  }
  return cross_entropy(x, y)
}
