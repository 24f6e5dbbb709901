# reshape (one -1), transpose, split, concat, slices and indexing.
model m(x: f32[B, 6, 4], y: i32[B, 6]) {
  r = reshape(x, B, -1)
  r2 = reshape(r, B, 6, 2, 2)
  t = transpose(r2, 1, 3)
  a, b = split(x, 2, axis = 2)
  p, q, s = split(x, 3, 1)
  c = concat(a, b, axis = -1)
  c2 = concat(p, q, s, axis = 1)
  u = x[..., 1:3]
  v = x[:, 2:, :-1]
  w = x[0]
  z = x[..., -1]
  k = c + c2 + reshape(transpose(t, 1, 3), B, 6, 4)[..., 0:4] * 0.0 + concat(u, u, axis = -1)
  return cross_entropy(k + reshape(z, B, 6, 1) + w + reshape(sum(v), 1), y)
}

train m { batch = 2 }
