# The 2M-op limit stops a recursion part-way: one error (with the calls as notes), no
# 'argument x of f must be a tensor, not nothing' after it.
def f(x: f32[..., n], k: int) {
  for i in 0..1000 { x = x + 0 }
  if k == 0 { return x }
  return f(f(x, k - 1), k - 1)
}
model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(f(x, 40), y)
}
