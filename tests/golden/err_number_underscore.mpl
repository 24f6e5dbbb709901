# 1_000 (Python's digit groups) is scanned as one word, as 1f1b is: neither a number nor a
# name (pass 83: "unknown name '1_000'"); 2e3x the same, with what a name starts with.
const c = 1_000
const d = 2e3x
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
