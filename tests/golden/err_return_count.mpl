# Several results (issue 13): the names must match the values, the values the
# signature's `-> (t1, t2)`, and each value returned must be one value.
def two(x: f32[B, n]) -> (f32[B, n], f32[]) {
  return x * 2.0, mean(x)
}
def short(x: f32[B, n]) -> (f32[B, n], f32[]) {
  return x
}
def wrong(x: f32[B, n]) -> (f32[B, n], f32[B]) {
  return x, mean(x)
}
def nested(x: f32[B, n]) {
  return x, split(x, 2)
}
model m(x: f32[B, 4], y: i32[B]) {
  a, b, c = two(x)
  d = two(x)
  e = short(x)
  f, g = wrong(x)
  h, i = nested(x)
  return cross_entropy(a + x, y)
}
