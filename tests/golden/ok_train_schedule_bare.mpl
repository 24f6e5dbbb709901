# args: --emit=graph
# The lr schedules without parentheses or arguments: cosine alone takes its defaults
# (warmup = 0, min_lr = 0), as a bare adamw does; constant() is constant (pass 49:
# both were refused).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m {
  batch = 4
  optimizer = adamw
  lr_schedule = cosine
}
