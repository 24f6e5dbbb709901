# args: --emit=graph --precision fp8
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
