# Batched matmul with broadcasting, 1-D operands, and folded transposes.
model m(a: f32[B, 2, 3, 4], c: f32[B, 1, 5, 6], y: i32[B, 2, 3]) {
  param w: f32[4, 5] = normal(1.0)
  param v: f32[4] = normal(1.0)
  h = a @ w
  k = h @ c
  r = v @ w @ transpose(w, 1, 0)
  s = a @ v
  t = transpose(a, -1, -2) @ a
  return cross_entropy(k + reshape(sum(r) + sum(s) + sum(t), 1), y)
}

train m { batch = 2 }
