# an absent optional param inside exp(...) (or any other op but + - * / @ and unary minus)
# is an error: it was dropped with the term around it, so a wrong model compiled silently
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.02)
  param b: f32[3] = zeros if false
  h = x @ w + exp(b) - b
  return cross_entropy(h, y)
}
