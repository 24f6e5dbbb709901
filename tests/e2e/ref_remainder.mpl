# Made by hand for what the random programs never write (pass 74): tests/e2e/ops_v2.sh checks
# a step against the float64 reference (test_refstep), its gradients by finite differences:
# tensor % tensor with a param divisor (gradient wrt b is -floor(a/b)), negative divisors, floor, pow with negative/int exponents
model m(x: f32[B, 4, 6], y: i32[B, 4]) {
  param b1: f32[6] = uniform(-0.6, 0.6)
  param b2: f32[6] = normal(0.5)
  t1 = x * 2.0
  t2 = t1 % (b1 * b1 + 0.7)
  t3 = t1 % (0.0 - (b2 * b2 + 0.6))
  t4 = t2 + t3 * 0.5 + pow(abs(x) + 1.0, -2.0) + pow(x, 3.0) * 0.1 + pow(x * b1, 2.0)
  param w: f32[6, 5] = normal(0.5)
  return cross_entropy(t4 @ w, y)
}
train m {
  batch = 2
  seq = 4
  microbatches = 1
  seed = 3
}
