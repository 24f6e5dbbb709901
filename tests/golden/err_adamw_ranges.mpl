# adamw's hyper-parameters outside what torch.optim.AdamW accepts: each an error (beta1 = 1
# divides by a zero bias correction; a negative decay grows the weights).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 4
  optimizer = adamw(lr = 1e-3, beta1 = 1.0, beta2 = -0.5, eps = -1e-8, weight_decay = -0.1)
}
