# i32 % by a compile-time 0 is an error (a computed divisor is checked at run time);
# f32 % 0 is NaN as in PyTorch, and % on bool tensors is an error.
model m(k: i32[B, 4], x: f32[B, 4], y: i32[B]) {
  a = k % 0
  b = x % 0.0
  c = (k > 1) % (k > 2)
  return cross_entropy(x + b, y)
}
