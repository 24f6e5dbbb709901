# v2 indexing: gather (computed indices get a run-time check; arange's, topk's and
# argmax's do not), one_hot, and conv2d (its patches times the weight, per image).
model m(x: f32[B, 4, 6], k: i32[B, 4, 2], img: f32[B, 3, 8, 8], y: i32[B]) {
  g = gather(x, k, axis = 2)
  r = gather(x, reshape(arange(4), 1, 4, 1) + k * 0, 1)
  o = one_hot(k, 6)
  param w: f32[5, 3, 3, 3] = normal(0.1)
  c = conv2d(img, w, stride = 2, padding = 1)
  q = gather(reshape(x, -1), arange(4), 0)
  z = sum(g, axis = 2) + sum(r, axis = 2) + sum(sum(o, axis = 3), axis = 2) + q
  return cross_entropy(z + sum(c, axis = 3)[:, 0:4, 0], y)
}
train m { batch = 2 }
