# args: --emit=graph
# split into 1 part (a const a -D may change) binds to one name as the tensor itself (pass
# 83: refused as "this gives 1 values; bind them with 1 names"); a tuple of one from a def
# binds the same way.
const parts = 1
def one(t: f32[B, 4]) -> f32[B, 4] {
  return split(t, parts, axis = 1)
}
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  a = split(x, parts, axis = 1)
  b = one(a)
  return cross_entropy(b @ w, y)
}
train m {
  batch = 4
}
