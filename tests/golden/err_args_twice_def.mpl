# A def's argument given by keyword, then again by position: the message names it.
def f(k: int, x: f32[B, 4], n: int) -> f32[B, 4] {
  return x
}
model m(x: f32[B, 4], y: i32[B]) {
  h = f(k = 2, x, 3)
  return cross_entropy(h, y)
}
