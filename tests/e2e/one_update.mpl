# One trainable param: its AdamW step is a run of one UPDATE, which runtime/update.c's
# update() takes alone (two params take the list path, adamw_list). tests/e2e/optim_paths.sh
# checks both give the same bits, under warm-up, cosine, weight decay and clipping.
const d = 8

model m(x: f32[B, d], y: i32[B]) {
  param w: f32[d, d] = normal(0.5)
  return cross_entropy(x @ w, y)
}

train m {
  data = synthetic(8)
  batch = 8
  optimizer = adamw(lr = 0.05, beta1 = 0.8, beta2 = 0.95, eps = 1e-6, weight_decay = 0.1)
  lr_schedule = cosine(2, 0.005)
  grad_clip = 0.5
  steps = 5
  seed = 3
}
