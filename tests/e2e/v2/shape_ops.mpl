# repeat, expand, stack and int indexing (issue 13): one training step against the
# float64 reference evaluator (tests/e2e/ops_v2.sh). Every value feeds the loss
# through a product, so every gradient is visible.
model m(x: f32[B, 3, 4], y: i32[B]) {
  param w: f32[4, 6] = normal(0.3)
  param u: f32[3, 1] = normal(0.5)
  h = x @ w                                       # [B, 3, 6]
  r = repeat(h, 2, axis = 1)                      # [B, 6, 6]: rows h0 h0 h1 h1 h2 h2
  r0 = repeat(h, 3, 0)                            # [3B, 3, 6]
  r1 = repeat(u, 3, axis = -1)                    # [3, 3]: a size-1 axis
  e = expand(u, 2, 3, 5)                          # [2, 3, 5]: a new leading axis
  e1 = expand(reshape(h, B, 3, 1, 6), -1, -1, 2, 6)   # [B, 3, 2, 6]
  s = stack(h, h * 2.0, r[:, 0:3, :], axis = 1)   # [B, 3, 3, 6]
  s1 = stack(h[:, 0, :], h[:, 2, :], -1)          # [B, 6, 2]: int indices drop their axis
  s2 = stack(split(h, 2, axis = -1))              # [2, B, 3, 3]: a tuple argument
  z = sum(r * r, axis = 1) + sum(s * s, axis = 1)[:, 0, :] + sum(s1, axis = -1) * sum(sum(e * e, axis = 0))
  z = z * sum(r1 * r1) + sum(e1 * e1, axis = 2)[:, 1, :] + concat(s2[0, :, 1, :], s2[1, :, 2, :], axis = -1)
  z = z + reshape(sum(r0 * r0, axis = 1), 3, B, 6)[1, :, :]
  return cross_entropy(z, y)
}
train m { batch = 4 }
