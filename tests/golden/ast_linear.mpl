# args: --emit=ast
def linear(x: f32[..., n], out: int, use_bias: bool = true) -> f32[..., out] {
  param weight: f32[n, out] = normal(0.02)
  param bias: f32[out] = zeros if use_bias
  return x @ weight + bias
}
