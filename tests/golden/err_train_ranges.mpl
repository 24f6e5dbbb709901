# grad_clip = 0 (torch's clip_grad_norm_ would zero every gradient; leave the key out for no
# clipping), a negative min_lr (a negative learning rate at the end of the cosine) and a
# negative sgd momentum are errors.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 4
  steps = 5
  optimizer = sgd(lr = 0.1, momentum = -0.5)
  lr_schedule = cosine(warmup = 2, min_lr = -0.1)
  grad_clip = 0
}
