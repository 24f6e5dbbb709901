# tests/e2e/ops_v2_tp.mpl — the v2 ops on split values (tests/e2e/ops_v2.sh trains it at
# tp = 1, 2 and 4 and compares the params): elementwise ops and gather, argmax, topk,
# cumsum and one_hot on the split features of a column-parallel linear (the gather's
# indices are cut to match, free; a whole table gathered with indices split along the
# gather axis: each rank's gradient of the table is a partial sum), and conv2d with its weight split on the output
# channels (column-parallel) followed by one split on the input channels (row-parallel).
# Nothing is all-gathered in the forward pass.
import nn

model m(x: f32[B, 6, 8], k: i32[B, 4, 16], img: f32[B, 3, 8, 8], y: i32[B]) {
  h = nn.col_linear(x, 16) as fc
  h = sin(h) * silu(h) + h % 0.5 + cos(floor(h * 4.0))
  g = gather(h, k, 1)
  t = nn.linear(x, 4) as tab
  gt = gather(t, cast(floor(abs(h) * 3.0), i32) % 4, 2)
  v, i = topk(h, 2, axis = 1)
  a = argmax(h, 1)
  c = cumsum(h, 1) * 0.1 + transpose(one_hot(a, 6), 1, 2)
  z = mean(g, axis = 1) + mean(gt, axis = 1) + sum(v, axis = 1) + mean(c, axis = 1) + mean(cast(i, f32), axis = 1) * 0.01
  param w1: f32[8, 3, 3, 3] = normal(0.2) @shard(0)
  param w2: f32[16, 8, 3, 3] = normal(0.2) @shard(1)
  p = conv2d(relu(conv2d(img, w1, padding = 1)), w2, stride = 2)
  z = nn.row_linear(z, 16) as proj
  z = z + mean(mean(p, axis = 3), axis = 2)
  return cross_entropy(nn.linear(z, 4) as out, y)
}

train m {
  batch = 8
  optimizer = sgd(lr = 0.2, momentum = 0.9)
  steps = 3
  seed = 5
}
