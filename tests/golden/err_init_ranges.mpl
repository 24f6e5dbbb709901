# A param's init in the ranges torch.nn.init takes, finite in f32 (a nan std trained to a nan
# loss that blamed an op; a negative std and low > high trained silently), and a learning
# rate that is 0 in f32, the update's precision (the params never moved): each an error
# (pass 45).
model m(x: f32[B, 4], y: i32[B]) {
  param a: f32[4] = normal(0.0 / 0.0)
  param b: f32[4] = normal(-1.0)
  param c: f32[4] = uniform(1.0, -1.0)
  param d: f32[4] = uniform(0.0, 1e300)
  param e: f32[4] = normal(0.5)
  return cross_entropy(x * a + x * b + x * c + x * d + x * e, y)
}
train m {
  batch = 4
  optimizer = sgd(lr = 1e-46)
}
