# Ops inherit the highest stage of their inputs; an op with no staged input
# runs on the stage of its earliest use; leaves and constants have none (@-).
mesh(pp = 3)

model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.02)
  pos = cast(arange(4), f32) * 0.5
  a = x @ w @stage(1)
  b = a + pos
  c = relu(x) @stage(0)
  d = b + c
  e = d * 2.0 @stage(2)
  return cross_entropy(e, y)
}
