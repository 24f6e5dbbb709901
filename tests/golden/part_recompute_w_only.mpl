# args: --emit=partition
# (pass 114: a mutant remade it in the input-gradient pass: stage 0's bwd_b then held it)
# Under zb, a @recompute product's output that only the weight pass reads (the next
# product's weight gradient; the input-gradient pass needs no activation of a product)
# is remade in the weight pass (recomp in bwd_w), not in the input-gradient pass and
# held until the weight pass.
import nn
mesh(pp = 2)
model m(x: f32[B, 64], y: i32[B]) {
  h = nn.linear(x, 64, use_bias = false) as l0 @stage(0) @recompute
  h = nn.linear(h, 64, use_bias = false) as l1 @stage(0) @recompute
  h = nn.linear(h, 64, use_bias = false) as l2 @stage(1)
  return cross_entropy(h, y)
}
train m {
  data = synthetic(16)
  batch = 16
  microbatches = 2
  schedule = zb
  steps = 2
}
