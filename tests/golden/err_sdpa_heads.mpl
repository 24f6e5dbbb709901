# sdpa's query heads must be a multiple of its key/value heads (issue 13).
model m(q: f32[B, 6, 5, 4], k: f32[B, 4, 5, 4], y: i32[B]) {
  a = sdpa(q, k, k, causal = true)
  return cross_entropy(sum(sum(a, axis = -1), axis = -1), y)
}
