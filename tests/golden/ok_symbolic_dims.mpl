# Symbolic dims are bound afresh at each call; ... matches leading dims.
const n = 1000

def bilinear(a: f32[..., n], b: f32[m, n]) -> f32[..., m] {
  return a @ transpose(b, 0, 1)
}

def same(x: f32[r, c], y: f32[r, c]) -> f32[r, c] {
  return x + y
}

model m(x: f32[B, 3, 5], y: i32[B, 3]) {
  param w: f32[7, 5] = normal(1.0)
  param p: f32[2, 2] = normal(1.0)
  h = bilinear(x, w)
  q = same(p, p)
  return cross_entropy(h + sum(q), y)
}

train m { batch = 2 }
