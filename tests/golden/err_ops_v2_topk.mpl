# topk with k larger than its axis, and k = 0: located at k.
model m(x: f32[B, 3, 4], y: i32[B]) {
  v, i = topk(x, 5)
  w, j = topk(x, 0, axis = 1)
  return cross_entropy(sum(x, axis = 1), y)
}
