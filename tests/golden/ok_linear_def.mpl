# The linear def of LANGUAGE.md, defined in the program itself.
def linear(x: f32[..., n], out: int, use_bias: bool = true) -> f32[..., out] {
  param weight: f32[n, out] = normal(0.02)
  param bias: f32[out] = zeros if use_bias
  return x @ weight + bias
}

model m(x: f32[B, T, 16], y: i32[B, T]) {
  h = relu(linear(x, 32))
  logits = linear(h, 10, use_bias = false)
  return cross_entropy(logits, y)
}

train m { batch = 4; seq = 3 }
