# NumPy broadcasting; scalar constants become rank-0 full ops of the tensor's dtype.
model m(a: f32[B, 1, 4], y: i32[B, 3]) {
  param b: f32[3, 1] = normal(1.0)
  c = a + b
  d = c * 2 - 1.5
  e = 1.0 / d
  f = -e + a
  cmp = f > 0.0
  g = where(cmp, f, 0.0)
  i = arange(4) + 1
  return cross_entropy(g + cast(i, f32), y)
}

train m { batch = 2 }
