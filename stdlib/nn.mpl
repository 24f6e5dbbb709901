# stdlib/nn.mpl — the standard layers, written in MPL itself: linear, layernorm,
# mlp, attention, block (a pre-LayerNorm transformer block) and gpt.
#
# Invariants: instance names inside follow GPT-2's (ln_1, attn.c_attn,
# attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, wte, wpe, h.N, ln_f), so checkpoints
# map onto GPT-2's parameter names; numerics follow PyTorch's defaults
# (LayerNorm eps 1e-5 with the biased variance, attention scaled by 1/sqrt(hs),
# GELU with the tanh approximation).

# y = x @ weight + bias, over the last dimension of x.
def linear(x: f32[..., n], out: int, use_bias: bool = true) -> f32[..., out] {
  param weight: f32[n, out] = normal(0.02)
  param bias: f32[out] = zeros if use_bias
  return x @ weight + bias
}

# Tensor-parallel halves of a linear layer (Megatron): column-parallel splits the
# output features over the mesh's tp axis (in `groups` equal groups, each split
# separately: a fused q|k|v), row-parallel splits the input features and all-reduces
# the partial sums. With tp = 1 both are exactly `linear`.
def col_linear(x: f32[..., n], out: int, groups: int = 1) -> f32[..., out] {
  param weight: f32[n, out] = normal(0.02) @shard(1, groups = groups)
  param bias: f32[out] = zeros @shard(0, groups = groups)
  return x @ weight + bias
}

def row_linear(x: f32[..., n], out: int) -> f32[..., out] {
  param weight: f32[n, out] = normal(0.02) @shard(0)
  param bias: f32[out] = zeros
  return x @ weight + bias
}

# LayerNorm over the last dimension: (x - mean) / sqrt(var + 1e-5) * weight + bias.
def layernorm(x: f32[..., n]) -> f32[..., n] {
  param weight: f32[n] = ones
  param bias: f32[n] = zeros
  mu = mean(x, axis = -1, keepdims = true)
  xc = x - mu
  var = mean(xc * xc, axis = -1, keepdims = true)
  return xc * rsqrt(var + 1e-5) * weight + bias
}

# The transformer's feed-forward part: d -> 4d -> gelu -> d (tensor-parallel:
# column- then row-parallel, one all-reduce).
def mlp(x: f32[..., d]) -> f32[..., d] {
  h = gelu(col_linear(x, 4 * d) as c_fc)
  return row_linear(h, d) as c_proj
}

# Causal multi-head self-attention with a fused q|k|v projection (tensor-parallel:
# heads split over tp, one all-reduce after c_proj).
def attention(x: f32[B, T, d], heads: int) -> f32[B, T, d] {
  hs = d / heads
  qkv = col_linear(x, 3 * d, 3) as c_attn
  q, k, v = split(qkv, 3, axis = -1)
  q = transpose(reshape(q, B, T, heads, hs), 1, 2)
  k = transpose(reshape(k, B, T, heads, hs), 1, 2)
  v = transpose(reshape(v, B, T, heads, hs), 1, 2)
  att = q @ transpose(k, -2, -1) * (1.0 / sqrt(hs))
  att = where(causal_mask(T), att, -inf)
  att = softmax(att, axis = -1)
  y = transpose(att @ v, 1, 2)
  y = reshape(y, B, T, d)
  return row_linear(y, d) as c_proj
}

# A pre-LayerNorm transformer block (GPT-2).
def block(x: f32[B, T, d], heads: int) -> f32[B, T, d] {
  x = x + attention(layernorm(x) as ln_1, heads) as attn
  x = x + mlp(layernorm(x) as ln_2) as mlp
  return x
}

# A GPT: token and position embeddings, `layers` blocks, a final LayerNorm and
# the unembedding tied to the token embedding; returns the mean cross-entropy.
def gpt(idx: i32[B, T], targets: i32[B, T], vocab: int, ctx: int, d: int, heads: int, layers: int) -> f32[] {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers {
    x = block(x, heads) as h[i]
  }
  x = layernorm(x) as ln_f
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}
