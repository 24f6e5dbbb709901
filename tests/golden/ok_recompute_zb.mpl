# args: --emit=partition --schedule zb
# @recompute under zb, whose weight-gradient pass waits: the region's copies run in the pass
# that reads them. The means (reductions) are made once, in the input-gradient pass (recomp);
# the LayerNorm's elementwise steps, which both passes read, are made in each, the weight
# pass's (recomp_w) from those held means, down to its output, which the second linear's
# weight gradient reads. The region's input h (the first linear's output) is kept.
import nn
mesh(pp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  h = nn.linear(x, 8) @stage(0)
  h = nn.linear(nn.layernorm(h), 8) @stage(0) @recompute
  h = nn.linear(gelu(h), 4) @stage(1)
  return cross_entropy(h, y)
}
train m { batch = 2; microbatches = 2 }
