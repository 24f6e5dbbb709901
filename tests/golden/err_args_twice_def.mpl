# A def's argument given by position, then again by keyword: the message names it. A
# positional argument after a keyword one is an error (as in Python), not bound to the
# next free slot.
def f(k: int, x: f32[B, 4], n: int) -> f32[B, 4] {
  return x
}
model m(x: f32[B, 4], y: i32[B]) {
  h = f(2, x, n = 3, k = 5)
  g = f(k = 2, x, 3)
  return cross_entropy(h + g, y)
}
