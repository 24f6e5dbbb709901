# i32 rules, as PyTorch's: mean needs a float tensor; a number past i32's range is an
# error in full() and against an i32 tensor (not a wrapped value); '/' by a compile-time 0
# on i32 tensors is an error, as '%' is.
model m(x: f32[B, 4], idx: i32[B, 4], y: i32[B]) {
  a = cast(mean(idx), f32)
  b = full(2147483648, 4)
  c = idx + 3000000000
  d = idx / 0
  return cross_entropy(x * a + cast(b + c + d, f32), y)
}
train m {
  batch = 4
}
