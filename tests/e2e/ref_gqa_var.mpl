# Made by hand for what the random programs never write (pass 74): tests/e2e/ops_v2.sh checks
# a step against the float64 reference (test_refstep), its gradients by finite differences:
# GQA (H 4, Hkv 2) with S != T, causal, v's head size apart, rope on rank 3 with odd T
import nn
model m(x: f32[B, 5, 8], y: i32[B, 5]) {
  param wq: f32[8, 8] = normal(0.5)
  param wk: f32[8, 4] = normal(0.5)
  param wv: f32[8, 6] = normal(0.5)
  q = transpose(reshape(x @ wq, B, 5, 4, 2), 1, 2)
  kv = x[:, 1:4, :]
  k = transpose(reshape(kv @ wk, B, 3, 2, 2), 1, 2)
  v = transpose(reshape(kv @ wv, B, 3, 2, 3), 1, 2)
  a = sdpa(nn.rope(q, base = 50.0), k, v, causal = true, scale = 0.8)
  r3 = nn.rope(x @ wq)
  param wo: f32[12, 8] = normal(0.5)
  h = x + reshape(transpose(a, 1, 2), B, 5, 12) @ wo + r3 * 0.3
  param w: f32[8, 7] = normal(0.5)
  return cross_entropy(h @ w, y)
}
train m {
  batch = 2
  seq = 5
  microbatches = 1
  seed = 14
}
