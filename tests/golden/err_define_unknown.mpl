# args: --emit=graph -D nosuch=3 -D width=abc
const width = 4
model m(x: f32[B, width], y: i32[B]) {
  return cross_entropy(x, y)
}
