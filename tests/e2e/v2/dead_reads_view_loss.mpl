# A loss that is a view (a reshape, then an int index) read by an unused statement (pass 84:
# the view was computed inline by its reader, so the loss had no buffer again).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  l = reshape(cross_entropy(x @ w, y), 1)
  loss = l[0]
  dead = loss * 1000.0
  return loss
}
train m {
  batch = 4
  optimizer = sgd(lr = 0.1)
}
