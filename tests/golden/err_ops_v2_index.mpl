# Mistakes with the v2 indexing and ordering ops, each located: gather with float or
# lower-rank indices, indices larger than x on another axis, an axis out of range;
# one_hot of floats and with no classes; argmax and cumsum of bool; sin of an i32 tensor.
model m(x: f32[B, 4, 6], k: i32[B, 4, 2], big: i32[B, 5, 2], y: i32[B]) {
  a = gather(x, x, 2)
  b = gather(x, k[:, :, 0], 2)
  c = gather(x, big, 2)
  d = gather(x, k, 3)
  e = one_hot(x, 4)
  f = one_hot(k, 0)
  g = argmax(x > 0.0, 1)
  h = cumsum(k > 1, axis = 1)
  i = sin(k)
  return cross_entropy(sum(x, axis = 2), y)
}
