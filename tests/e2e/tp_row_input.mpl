# nn.row_linear on whole inputs (tests/e2e/tp_layouts.sh): a replicated input is cut to
# the rows of the weight this tp rank holds (tp_slice, no communication) and a partial
# sum to its part (reduce_scatter), like Megatron's RowParallelLinear with
# input_is_parallel = False. Nothing is all-gathered in the forward pass; must train
# like tp = 1.
import nn
mesh(tp = 2)
model m(x: f32[B, 16], y: i32[B]) {
  param down: f32[32, 16] = normal(0.2) @shard(0)
  h = gelu(nn.linear(x, 16) as inp)        # replicated, and it has a gradient
  h = gelu(nn.row_linear(h, 32) as proj)   # whole input: tp_slice, then a partial sum
  u = gelu(nn.col_linear(h, 32) as up)     # split on its last dimension
  q = u @ down                             # row-parallel: a partial sum
  z = nn.row_linear(q, 4) as head          # a partial input: reduce_scatter, then a partial sum
  return cross_entropy(z, y)
}
train m {
  batch = 8
  optimizer = sgd(lr = 0.2, momentum = 0.9)
  steps = 3
  seed = 5
}
