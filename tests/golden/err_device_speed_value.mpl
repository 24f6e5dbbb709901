# args: --emit=plan --device-speed 1,0
# A speed must be positive.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  a = relu(x) @stage(0)
  return cross_entropy(a, y) @stage(1)
}
