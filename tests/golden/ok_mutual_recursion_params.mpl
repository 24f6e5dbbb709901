# A def reaching params only through mutual recursion: a calls b before declaring its
# param, and b (found while a was) was cached as making no instance ("param a_0.a_0.w is
# declared twice"); each call of b is its own instance.
def a(x: f32[..., n], k: int) {
  y = x
  if k > 0 {
    y = b(y, k - 1)
    y = b(y, k - 1)
  }
  param w: f32[n] = ones
  return y * w
}
def b(x: f32[..., n], k: int) {
  return a(x, k)
}
model m(x: f32[B, 8], y: i32[B]) {
  h = a(x, 1)
  return cross_entropy(h, y)
}
