# args: --emit=graph
# A cosine warm-up as long as the run reaches lr at the last step only: warned (pass 111;
# warn_cosine_warmup.mpl has one longer than the run)
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 2
  steps = 5
  lr_schedule = cosine(warmup = 5)
}
