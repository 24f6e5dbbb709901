# A nan (0.0 / 0.0) is named "nan", not "-nan", and reported once per number: not also
# "not positive" or "not in [0, 1)" (beta1 = 2.0 is still its own error).
mesh(pp = 1)
model m(x: f32[4, 8], y: i32[4]) {
  h = dropout(x, 0.0 / 0.0)
  return cross_entropy(h, y)
}
train m {
  data = synthetic(16)
  batch = 4
  optimizer = adamw(lr = 0.0 / 0.0, beta1 = 2.0)
  lr_schedule = cosine(10, -(0.0 / 0.0))
  steps = 1
}
