# A def inside a def is one error, at the inner def (pass 83: a syntax error whose recovery
# closed the outer body, then "unexpected 'return', expecting 'import', ..." at its next
# statement).
def f(x: f32[B, 4]) -> f32[B, 4] {
  def g(y: f32[B, 4]) -> f32[B, 4] {
    return y
  }
  return g(x)
}
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(f(x) @ w, y)
}
