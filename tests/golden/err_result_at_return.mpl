# A def returning its argument as is, of the wrong shape for its result type: the error is
# at the return (it was at the caller's argument, and the def's line never showed).
def h(x: f32[a, b]) -> f32[b, a] {
  return x
}
model m(x: f32[B, 8], y: i32[B]) {
  v = h(x[0:4])
  return cross_entropy(x, y)
}
