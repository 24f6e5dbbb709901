# args: --emit=partition --mesh tp=2
# Two independent ops each need the same tp-split value whole: both are refused in one run
# (the second was reported only once the first was mended).
model m(x: f32[B, 8], y: i32[B]) {
  param w: f32[8, 4] = normal(0.3) @shard(1)
  h = x @ w
  s = softmax(h, axis = -1)
  v, i = topk(h, 2)
  return cross_entropy(s + sum(v, axis = -1, keepdims = true), y)
}
