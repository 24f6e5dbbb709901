# Made by hand for what the random programs never write (pass 74): tests/e2e/ops_v2.sh checks
# a step against the float64 reference (test_refstep), its gradients by finite differences:
# extra model inputs (bool and i32), batch-axis ops: concat/slice on axis 0, reshape merging B and T, softmax over the merged axis
model m(x: f32[B, 4, 6], mk: bool[B, 4], ids: i32[B, 4], y: i32[B, 4]) {
  param g: f32[6] = normal(0.5)
  h = x * g
  flip = concat(h[1:2, :, :], h[0:1, :, :], axis = 0)
  f = reshape(h, -1, 6)
  sm = reshape(softmax(f, axis = 0), B, 4, 6)
  e = embedding(ids, 3, 6) as em
  z = where(reshape(mk, B, 4, 1), h + flip, sm * 3.0) + e + transpose(transpose(h, 0, 1) * 0.5, 0, 1)
  param w: f32[6, 5] = normal(0.5)
  return cross_entropy(z @ w, y)
}
train m {
  batch = 4
  seq = 4
  microbatches = 2
  seed = 13
}
