# Sums of products under precision = bf16, each rounded once as one product's result
# (pass 51): a row-parallel product's partial sums all-reduced at tp = 2 (before the
# relu: the sum itself was left unrounded), a broadcast batched product's weight
# gradient summed over the batch (SUM_TO: the per-batch products were rounded, their sum
# not, where autocast's sum_to_size gives bf16), and conv2d's input gradient (COL2IM of
# the patches' products: each patch's product was rounded before the sum, where one
# convolution rounds once). A bias's gradient is no product's: the sum over rows of a
# product's bf16 input gradient stays f32 (pass 75: rounded, as a layer norm's bias was).
# tests/tools/bf16_sums.py checks one SGD step at lr = 1 against a float64 emulation
# (tests/e2e/bf16.sh).
model m(x: f32[B, 8], y: i32[B]) {
  param xin: f32[4, 64] = normal(1.0)
  param a: f32[64, 8] = normal(1.0) @shard(0)
  param w: f32[4, 8] = zeros
  param xb: f32[4, 2, 8, 16] = normal(1.0)
  param ab: f32[2, 16, 8] = normal(1.0)
  param wb: f32[4, 2, 8, 8] = normal(1.0)
  param xc: f32[1, 2, 6, 6] = normal(1.0)
  param k: f32[3, 2, 3, 3] = normal(1.0)
  param wc: f32[1, 3, 4, 4] = normal(1.0)
  param xd: f32[4, 16] = normal(1.0)
  param bd: f32[16] = normal(1.0)
  param ad: f32[16, 8] = normal(1.0)
  param wd: f32[4, 8] = normal(1.0)
  h = relu(xin @ a)
  d = sum(wd * ((xd + bd) @ ad))
  return sum(w * h) + sum(wb * (xb @ ab)) + sum(wc * conv2d(xc, k)) + d + mean(x) * 0.0 + mean(cast(y, f32)) * 0.0
}

train m {
  data = synthetic(4)
  batch = 4
  optimizer = sgd(lr = 1.0)
  steps = 1
  precision = bf16
}
