# A compile-time cast to i32 of a value outside i32's range (1e30, 3e9, inf, nan) is an
# error at the cast, not a wrapped or sign-flipped integer.
const c = cast(1e30, i32)
const d = cast(3e9, i32)
const e = cast(-2147483648.5, i32)
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x * c * d * e, y)
}
train m {
  batch = 4
}
