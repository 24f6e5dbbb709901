# args: --emit=partition
# A @recompute block and then a @recompute statement are two regions. The block's output h
# (gelu, %6) is what the second region's copies read from outside it, so it is kept (stash)
# and the second region's copies (%13, %14) read it; the backward's own readers of h read
# the block's copy (%21: a gelu remade though %6 is kept, a possible saving). (Pass 114's P17: with a forward reader of any marked value
# reading its copy, h was not kept and the second region read the block's copy.)
import nn

model m(x: f32[B, 8], y: i32[B]) {
  @recompute {
    h = gelu(nn.linear(x, 8))
  }
  h = nn.linear(h, 4) @recompute
  return cross_entropy(h, y)
}
