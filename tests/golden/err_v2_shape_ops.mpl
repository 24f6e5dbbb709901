# Located errors of repeat, stack and sdpa (issue 13).
model m(x: f32[B, 3, 4], q: f32[B, 2, 5, 4], y: i32[B]) {
  a = repeat(x, 0, axis = 1)
  b = repeat(x, 2, axis = 3)
  c = stack(x, x[:, 0:2, :], axis = 1)
  d = stack(x, x, axis = 4)
  e = sdpa(q, x, x)
  f = sdpa(q, q, q, causal = 1)
  g = sdpa(q, q, q) as attn
  return cross_entropy(sum(x, axis = -1), y)
}
