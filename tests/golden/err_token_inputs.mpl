# args: --emit=graph
# data = tokens(...) feeds (idx, targets), both i32[B, seq]: a bf16 idx and a third input
# are refused when compiled, not when mplrun opens the data.
model m(idx: bf16[B, T], targets: i32[B, T], extra: i32[B, T]) {
  param w: f32[4, 4] = normal(0.1)
  return cross_entropy(embedding(targets, 4, 4) @ w + sum(cast(idx, f32)) * 0.0 + sum(cast(extra, f32)) * 0.0, targets)
}
train m {
  data = tokens("tok.bin")
  batch = 2
  seq = 4
}
