# v2 ordering ops: argmax (with keepdims), cumsum (f32 and i32), topk (a pair: the values
# are a gather of x by the indices, which need no run-time check).
model m(x: f32[B, 3, 6], y: i32[B, 3]) {
  a = argmax(x, -1)
  a2 = argmax(x, axis = 1, keepdims = true)
  c = cumsum(x, 2) + cast(cumsum(a2, 2), f32)
  v, i = topk(x, 2)
  w, j = topk(x, k = 3, axis = 1)
  z = c[:, :, 0:2] + v + cast(i, f32) + cast(reshape(a, B, 3, 1), f32) + sum(w, axis = 1, keepdims = true)[:, :, 0:2]
  return cross_entropy(z, y % 2) + mean(cast(j, f32))
}
train m { batch = 2 }
