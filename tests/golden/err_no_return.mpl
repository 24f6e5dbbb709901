# A model without return, and a def whose result is missing.
def nothing(x: f32[B, n]) {
  y = x
}
model m(x: f32[B, 4], y: i32[B]) {
  z = nothing(x)
}
