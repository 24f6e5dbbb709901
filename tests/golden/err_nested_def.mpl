# A def inside a def, or a model inside a model, is one error at the inner one (pass 83 and
# 84: a syntax error whose recovery closed the outer body, then "unexpected 'return',
# expecting 'import', ..." at its next statement).
def f(x: f32[B, 4]) -> f32[B, 4] {
  def g(y: f32[B, 4]) -> f32[B, 4] {
    return y
  }
  return g(x)
}
model m(x: f32[B, 4], y: i32[B]) {
  model inner(z: f32[B, 4]) {
    return z
  }
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(f(x) @ w, y)
}
