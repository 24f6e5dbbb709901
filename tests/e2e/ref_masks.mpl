# Made by hand for what the random programs never write (pass 74): tests/e2e/ops_v2.sh checks
# a step against the float64 reference (test_refstep), its gradients by finite differences:
# maximum/minimum ties, where with broadcast masks, causal_mask on 4-D scores, full of 3 dims
model m(x: f32[B, 4, 6], y: i32[B, 4]) {
  param g: f32[6] = normal(0.5)
  h = x * g
  t = maximum(h, h * 1.0) + minimum(relu(h), 0.0) + maximum(h, 0.0)
  s = reshape(h, B, 1, 4, 6) @ transpose(reshape(h, B, 1, 4, 6), 2, 3)
  sm = softmax(where(causal_mask(4), s, full(-1e9, 1, 4, 4)), axis = -1)
  u = reshape(sm @ reshape(h, B, 1, 4, 6), B, 4, 6)
  mk = sum(h, axis = -1, keepdims = true) > 0.0
  v = where(mk, u, t) + full(0.1, 1, 1, 6) * h
  param w: f32[6, 5] = normal(0.5)
  return cross_entropy(v @ w, y)
}
train m {
  batch = 2
  seq = 4
  microbatches = 1
  seed = 9
}
