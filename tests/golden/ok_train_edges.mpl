# A train block at its edges (pass 111: a mutant refused each): microbatches = 65536, the
# most (one row each), a cosine schedule with warmup = 0 written out, and eval_batches = 2^30
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 65536
  microbatches = 65536
  lr_schedule = cosine(warmup = 0, min_lr = 0.0)
  eval_batches = 1073741824
}
