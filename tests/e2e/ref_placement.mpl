# Made by hand for what the random programs never write (pass 74): tests/e2e/ops_v2.sh checks
# a step against the float64 reference (test_refstep), its gradients by finite differences:
# dropout inside @recompute, for-loop header annotations, nested override
import nn
mesh(pp = 2)
def blk(x: f32[..., d]) -> f32[..., d] {
  param w: f32[d, d] = normal(0.3)
  return x + dropout(tanh(x @ w), 0.25)
}
model m(x: f32[B, 4, 6], y: i32[B, 4]) {
  h = x * 1.0
  for i in 0..2 @stage(0) @recompute {
    h = blk(h) as a[i]
  }
  @stage(1) {
    h = dropout(h, 0.1) @recompute
    for i in 0..2 @recompute {
      h = blk(h) as b[i]
    }
  }
  param w: f32[6, 5] = normal(0.5)
  return cross_entropy(h @ w, y)
}
train m {
  batch = 4
  seq = 4
  microbatches = 2
  schedule = 1f1b
  seed = 7
}
