# A line continues while a ( or [ is open, also after an inner [ ... ] has closed.
def f(a: f32[B, 4],
      b: f32[B, 4]) {
  return a + b
}

model m(x: f32[B, 4],
        y: i32[B]) {
  h = concat(x[:, 0:2],
             x[:, 2:4], axis = 1)
  w = f(h[:, 0:4],
        x)
  return cross_entropy(w, y)
}
