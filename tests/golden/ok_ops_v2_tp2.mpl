# args: --emit=grad
# The v2 ops under tp = 2: elementwise ops and argmax, topk, cumsum (over another axis)
# keep the split of a column-parallel linear; gather keeps it, its whole indices cut to
# match (tp_slice, free) and checked whole; conv2d with its weight split on the output
# channels is column-parallel (its patches enter with tp_enter), the next one with its
# weight split on the input channels row-parallel (a partial sum, one all-reduce). No
# all-gather.
import nn
mesh(tp = 2)
model m(x: f32[B, 3, 4], k: i32[B, 2, 8], img: f32[B, 2, 4, 4], y: i32[B]) {
  h = nn.col_linear(x, 8) as fc
  h = sin(h) + silu(h) % 0.5
  g = gather(h, k, 1)
  v, i = topk(h, 2, axis = 1)
  a = argmax(h, 1)
  z = mean(g, axis = 1) + sum(v, axis = 1) + mean(cumsum(h, 1), axis = 1) + cast(a, f32)
  param w1: f32[4, 2, 3, 3] = normal(0.2) @shard(0)
  param w2: f32[3, 4, 3, 3] = normal(0.2) @shard(1)
  p = conv2d(relu(conv2d(img, w1, padding = 1)), w2)
  z = nn.row_linear(z, 3) as proj
  return cross_entropy(z + mean(mean(p, axis = 3), axis = 2), y)
}
train m { batch = 2 }
