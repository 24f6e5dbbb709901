# args: --emit=graph -D h=5 -D h=3
# -D given twice for one name: an error (the first value used to win silently).
const h = 4
model m(x: f32[B, h], y: i32[B]) {
  return cross_entropy(x, y)
}
