# A program in its own bf16 tensors (LANGUAGE.md, "Types and shapes"): bf16 params and
# activations, computed in f32 and rounded to bf16 after each op, the backward too; the
# params' f32 copies trained by AdamW. A causal attention block (layer norm, sdpa, GELU MLP)
# and an f32 head. test_refstep checks a step against the float64 reference; e2e/bf16.sh
# trains it. tests/e2e/half_f16.mpl is the same in f16.

mesh(pp = 2)

def norm(x: bf16[..., n]) -> bf16[..., n] {
  param weight: bf16[n] = ones
  mu = mean(x, axis = -1, keepdims = true)
  xc = x - mu
  return xc * rsqrt(mean(xc * xc, axis = -1, keepdims = true) + cast(1e-5, bf16)) * weight
}

def block(x: bf16[B, T, d], heads: int) -> bf16[B, T, d] {
  hs = d / heads
  param wqkv: bf16[d, 3 * d] = normal(0.05)
  param wo: bf16[d, d] = normal(0.05)
  param w1: bf16[d, 4 * d] = normal(0.05)
  param w2: bf16[4 * d, d] = normal(0.05)
  q, k, v = split(norm(x) @ wqkv, 3, axis = -1)
  q = transpose(reshape(q, B, T, heads, hs), 1, 2)
  k = transpose(reshape(k, B, T, heads, hs), 1, 2)
  v = transpose(reshape(v, B, T, heads, hs), 1, 2)
  y = reshape(transpose(sdpa(q, k, v, causal = true), 1, 2), B, T, d)
  x = x + y @ wo
  return x + gelu(norm(x) @ w1) @ w2
}

model half(idx: i32[B, T], targets: i32[B, T]) {
  param wte: bf16[64, 32] = normal(0.05)
  x = cast(one_hot(idx, 64), bf16) @ wte
  x = block(x, 4)
  x = block(x, 4)
  param head: f32[32, 64] = normal(0.05)
  return cross_entropy(cast(norm(x), f32) @ head, targets)
}

train half {
  data = synthetic(64)
  batch = 8
  microbatches = 2
  optimizer = adamw(lr = 1e-2)
  steps = 20
  seed = 5
}
