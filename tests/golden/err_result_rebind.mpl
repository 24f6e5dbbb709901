# A def's result is checked against the signature's names as the call bound them: the
# body's own `n = ...` changes neither f's check (its [B, 4] result passes) nor g's (its
# [B, 8] result fails against n = 4, bound by the argument).
def f(x: f32[..., n]) -> f32[..., n] {
  n = 8
  return x * 2.0
}
def g(x: f32[..., n]) -> f32[..., n] {
  n = 8
  return concat(x, x, axis = -1)
}
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(f(x) + g(x), y)
}
