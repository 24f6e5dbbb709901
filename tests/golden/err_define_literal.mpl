# args: --emit=graph -D k=1.
# -D takes the language's literals: 1. (and .5) are not (they were accepted).
const k = 2.0
model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(x * k, y)
}
