# stdlib/nn.mpl — the standard layers in MPL: linear, layernorm, mlp, attention, block,
# gpt; then Llama-class layers (rmsnorm, rope, swiglu, gqa_attention, llama_block, moe).
# Invariants: instance names follow GPT-2's (ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
# mlp.c_proj, wte, wpe, h.N, ln_f) and Meta's Llama names (attention_norm, attention.wq..wo,
# ffn_norm, feed_forward.w1..w3; weights in MPL's [in, out] layout); numerics follow PyTorch
# (LayerNorm eps 1e-5, biased variance; attention scaled by 1/sqrt(hs); tanh GELU). Layers run
# at any tp that divides their heads and features as written. New defs go at the end: an
# op's source place (line:col) is part of the golden dumps.

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
def col_linear(x: f32[..., n], out: int, groups: int = 1, use_bias: bool = true) -> f32[..., out] {
  param weight: f32[n, out] = normal(0.02) @shard(1, groups = groups)
  param bias: f32[out] = zeros if use_bias @shard(0, groups = groups)
  return x @ weight + bias
}

def row_linear(x: f32[..., n], out: int, use_bias: bool = true, std: float = 0.02) -> f32[..., out] {
  param weight: f32[n, out] = normal(std) @shard(0)
  param bias: f32[out] = zeros if use_bias
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
def mlp(x: f32[..., d], proj_std: float = 0.02) -> f32[..., d] {
  h = gelu(col_linear(x, 4 * d) as c_fc)
  return row_linear(h, d, std = proj_std) as c_proj
}

# Multi-head self-attention with a fused q|k|v projection, causal unless causal =
# false (encoders); tensor-parallel: heads split over tp, one all-reduce after c_proj.
def attention(x: f32[B, T, d], heads: int, causal: bool = true, proj_std: float = 0.02) -> f32[B, T, d] {
  hs = d / heads
  qkv = col_linear(x, 3 * d, 3) as c_attn
  q, k, v = split(qkv, 3, axis = -1)
  q = transpose(reshape(q, B, T, heads, hs), 1, 2)
  k = transpose(reshape(k, B, T, heads, hs), 1, 2)
  v = transpose(reshape(v, B, T, heads, hs), 1, 2)
  y = transpose(sdpa(q, k, v, causal = causal), 1, 2)     # fused: no T x T buffer
  y = reshape(y, B, T, d)
  return row_linear(y, d, std = proj_std) as c_proj
}

# A pre-LayerNorm transformer block (GPT-2; proj_std = 0.02 / sqrt(2 * layers): GPT-2's c_proj init).
def block(x: f32[B, T, d], heads: int, proj_std: float = 0.02) -> f32[B, T, d] {
  x = x + attention(layernorm(x) as ln_1, heads, proj_std = proj_std) as attn
  x = x + mlp(layernorm(x) as ln_2, proj_std) as mlp
  return x
}

# A GPT: token and position embeddings, `layers` blocks, a final LayerNorm and
# the unembedding tied to the token embedding; returns the mean cross-entropy.
def gpt(idx: i32[B, T], targets: i32[B, T], vocab: int, ctx: int, d: int, heads: int, layers: int) -> f32[] {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers {
    x = block(x, heads, 0.02 / sqrt(2.0 * layers)) as h[i]
  }
  x = layernorm(x) as ln_f
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}

# ---- Llama-class layers (contract v2) -----------------------------------------

# RMSNorm over the last dimension: x * rsqrt(mean(x * x) + eps) * weight.
def rmsnorm(x: f32[..., n], eps: float = 1e-6) -> f32[..., n] {
  param weight: f32[n] = ones
  return x * rsqrt(mean(x * x, axis = -1, keepdims = true) + eps) * weight
}

# Rotary position embedding of [..., T, hs] in the rotate-half form: with
# f_i = base^(-2i/hs) and a = t * f_i at position t, for i < hs/2,
# y_i = x_i cos a - x_{i+hs/2} sin a and y_{i+hs/2} = x_{i+hs/2} cos a + x_i sin a.
def rope(x: f32[..., T, hs], base: float = 10000.0) -> f32[..., T, hs] {
  x1, x2 = split(x, 2, axis = -1)
  half = hs / 2
  f = exp(cast(arange(half), f32) * (-2.0 * log(base) / hs))
  a = reshape(cast(arange(T), f32), T, 1) * reshape(f, 1, half)
  c = cos(a)
  s = sin(a)
  return concat(x1 * c - x2 * s, x2 * c + x1 * s, axis = -1)
}

# The SwiGLU feed-forward part: w2(silu(w1(x)) * w3(x)), linears without biases
# (tensor-parallel: w1 and w3 column-, w2 row-parallel, one all-reduce).
def swiglu(x: f32[..., d], hidden: int) -> f32[..., d] {
  h = silu(col_linear(x, hidden, use_bias = false) as w1) * col_linear(x, hidden, use_bias = false) as w3
  return row_linear(h, d, use_bias = false) as w2
}

# Causal grouped-query self-attention: `heads` query heads share `kv_heads` key and
# value heads; projections wq, wk, wv, wo without biases, rope (with `base`) on
# queries and keys (tensor-parallel: heads and kv_heads split over tp, one all-reduce
# after wo; both must divide by tp).
def gqa_attention(x: f32[B, T, d], heads: int, kv_heads: int, base: float = 10000.0) -> f32[B, T, d] {
  hs = d / heads
  q = transpose(reshape(col_linear(x, d, use_bias = false) as wq, B, T, heads, hs), 1, 2)   # heads divides d
  k = transpose(reshape(col_linear(x, kv_heads * hs, use_bias = false) as wk, B, T, kv_heads, hs), 1, 2)
  v = transpose(reshape(col_linear(x, kv_heads * hs, use_bias = false) as wv, B, T, kv_heads, hs), 1, 2)
  y = sdpa(rope(q, base), rope(k, base), v, causal = true)
  y = reshape(transpose(y, 1, 2), B, T, heads * hs)
  return row_linear(y, d, use_bias = false) as wo
}

# A Llama transformer block (pre-RMSNorm, grouped-query attention, SwiGLU), with
# the instance names of Meta's checkpoints; eps of the norms and rope's base are
# Llama 1's by default (Llama 2 and 3 use eps = 1e-5; Llama 3 base = 500000).
def llama_block(x: f32[B, T, d], heads: int, kv_heads: int, hidden: int, eps: float = 1e-6, base: float = 10000.0) -> f32[B, T, d] {
  x = x + gqa_attention(rmsnorm(x, eps) as attention_norm, heads, kv_heads, base) as attention
  return x + swiglu(rmsnorm(x, eps) as ffn_norm, hidden) as feed_forward
}

# A mixture of SwiGLU experts with top-k routing; returns (y, aux). Every token's
# router probabilities are softmax(x @ router); its top_k experts are weighted by
# their probabilities renormalised over the k. The experts are computed densely
# (each sees every token; an expert a token did not choose weighs 0) and held whole
# as [experts, ...] weights, split on that axis under tp (expert parallelism: the
# tokens are broadcast to the experts, no all-to-all). aux is the Switch
# Transformer load-balancing loss experts * sum_e fraction_e * mean_prob_e, where
# fraction_e is expert e's share of the tokens' k choices; it is 1 when routing is
# uniform. The caller adds it to the loss with its own weight.
def moe(x: f32[B, T, d], experts: int, hidden: int, top_k: int) -> (f32[B, T, d], f32[]) {
  param router: f32[d, experts] = normal(0.02)
  param w1: f32[experts, d, hidden] = normal(0.02) @shard(0)
  param w3: f32[experts, d, hidden] = normal(0.02) @shard(0)
  param w2: f32[experts, hidden, d] = normal(0.02) @shard(0)
  xf = reshape(x, B * T, d)
  probs = softmax(xf @ router, axis = -1)
  top, idx = topk(probs, top_k)
  gates = top / sum(top, axis = -1, keepdims = true)
  chosen = one_hot(idx, experts)
  combine = sum(chosen * reshape(gates, B * T, top_k, 1), axis = 1)
  ye = (silu(xf @ w1) * (xf @ w3)) @ w2
  y = sum(ye * reshape(transpose(combine, 0, 1), experts, B * T, 1), axis = 0)
  fraction = mean(sum(chosen, axis = 1), axis = 0) * (1.0 / top_k)
  aux = experts * sum(fraction * mean(probs, axis = 0))
  return reshape(y, B, T, d), aux
}
