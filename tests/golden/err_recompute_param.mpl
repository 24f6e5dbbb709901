# @recompute on a param declaration (it marks computed values; it was a silent no-op),
# and on the statement that reads it (accepted).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1) @recompute
  h = x @ w @recompute
  return cross_entropy(h, y)
}
