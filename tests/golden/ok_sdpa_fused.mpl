# args: --emit=grad
# sdpa fused (issue 14, the default for f32 q, k, v): one sdpa op per call with its result
# #1, the log-sum-exp of each query row [B, H, T]; the backward is one sdpa_grad reading
# q, k, v, the output, the lse and the output's gradient, writing dq, and dk and dv as its
# results #1 and #2. 4 query heads over 2 kv heads, causal; v's head size (6) is not q's (8).
model m(x: f32[B, 5, 8], y: i32[B]) {
  param wq: f32[4, 8] = normal(0.5)
  param wk: f32[2, 8] = normal(0.5)
  param wv: f32[2, 6] = normal(0.5)
  q = reshape(x, B, 5, 1, 8) * reshape(wq, 1, 1, 4, 8)
  k = reshape(x, B, 5, 1, 8) * reshape(wk, 1, 1, 2, 8)
  v = reshape(x[..., 0:6], B, 5, 1, 6) * reshape(wv, 1, 1, 2, 6)
  a = sdpa(transpose(q, 1, 2), transpose(k, 1, 2), transpose(v, 1, 2), causal = true)
  return cross_entropy(sum(sum(a, axis = -1), axis = -1), y)
}
train m { batch = 2 }
