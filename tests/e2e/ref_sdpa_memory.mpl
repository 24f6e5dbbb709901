# Made by hand (pass 106): tests/e2e/ops_v2.sh checks a step against the float64 reference
# (test_refstep), its gradients by finite differences: attention over learned memory, keys and
# values made from params alone, so their gradients (the fused attention's results) feed only
# the params' sums, on two stages under zero-bubble (the results stay in their op's pass)
mesh(pp = 2)
model m(x: f32[B, 4, 8], y: i32[B, 4]) {
  param wq: f32[8, 8] = normal(0.5)
  param km: f32[1, 2, 3, 4] = normal(0.5)
  param vm: f32[1, 2, 3, 4] = normal(0.5)
  q = transpose(reshape(x @ wq, B, 4, 2, 4), 1, 2)
  a = sdpa(q, expand(km, B, 2, 3, 4), expand(vm, B, 2, 3, 4))
  h = x + reshape(transpose(a, 1, 2), B, 4, 8)
  @stage(1) {
    param w: f32[8, 5] = normal(0.5)
    l = cross_entropy(h @ w, y)
  }
  return l
}
train m {
  schedule = zb
  batch = 4
  seq = 4
  microbatches = 4
  seed = 5
}
