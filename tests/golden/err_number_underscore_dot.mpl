# 1_000.5 is the word 1_000 and then '.': a syntax error, with a hint on how a number is
# written (pass 84: "unexpected integer 5, expecting a name" alone).
const e = 1_000.5
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
