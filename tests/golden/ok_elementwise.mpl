# Every elementwise built-in.
model m(x: f32[B, 5], y: i32[B]) {
  a = exp(x) + log(x) + sqrt(x) + rsqrt(x)
  b = tanh(a) + sigmoid(a) + relu(a) + gelu(a) + abs(a)
  c = pow(b, 3) + pow(b, 0.5)
  d = maximum(c, x) + minimum(c, 0.0)
  e = where(d > x, d, x)
  f = cast(cast(e, bf16), f32) + cast(cast(e, i32), f32)
  return cross_entropy(f, y)
}

train m { batch = 2 }
