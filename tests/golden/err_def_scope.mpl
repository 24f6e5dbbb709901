# A def body sees only its arguments, consts, defs and modules.
const k = 2
def scaled(x: f32[..., n]) {
  return x * k + outer
}
model m(x: f32[B, 4], y: i32[B]) {
  outer = x
  return cross_entropy(scaled(x), y)
}
