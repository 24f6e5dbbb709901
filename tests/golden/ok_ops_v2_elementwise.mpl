# v2 elementwise ops: sin, cos, floor, silu, and % on tensors (torch.remainder); an i32 %
# whose divisor is computed gets a run-time check, one by a constant does not.
model m(x: f32[B, 4], k: i32[B, 4], y: i32[B]) {
  a = sin(x) + cos(x) * floor(x) + silu(x)
  b = x % 0.5 + x % (abs(x) + 1.0)
  i = k % 3 + (k + 1) % (k + 2)
  z = a + b + cast(i, f32) + sin(1.0) + floor(2.5) + silu(0.0)
  return cross_entropy(z, y)
}
train m { batch = 2 }
