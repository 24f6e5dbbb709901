# Every train key, keyword and positional forms.
const ctx = 4

model m(idx: i32[B, T], y: i32[B, T]) {
  param w: f32[3, 5] = uniform(-0.1, 0.1)
  return cross_entropy(embedding(idx, 5, 3) @ w, y)
}

train m {
  data = tokens("data/train.bin")
  batch = 12
  seq = ctx * 2
  microbatches = 3
  schedule = gpipe
  optimizer = adamw(3e-4, 0.8, 0.9, 1e-6, weight_decay = 0.0)
  lr_schedule = cosine(warmup = 10, min_lr = 1e-5)
  grad_clip = 1.0
  zero = 1
  steps = 1000
  seed = 42
}
