# args: --emit=graph
# INT64_MIN % -1 is 0 (only the quotient overflows); it was reported as an overflow.
const a = -9223372036854775807 - 1
const b = a % -1
model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(x * b, y)
}
