# tests/parity/v2/vit.mpl — a small Vision Transformer for the PyTorch parity check
# (tests/parity/run_v2.sh): 3x8x8 synthetic images cut into 4x4 patches by a strided conv2d
# (the patch embedding, d 16), a class token, position embeddings, 2 pre-LayerNorm blocks of
# nn.attention(causal = false) (4 heads) and nn.mlp, a final LayerNorm and a linear head to
# 10 classes on the class token. Batch 4 in 2 micro-batches, 3 AdamW steps on synthetic(16).
# tests/parity/torch_v2.py is its float64 twin.
import nn

const image = 8
const patch = 4
const channels = 3
const classes = 10
const d = 16
const layers = 2
const heads = 4
const n = (image / patch) * (image / patch)

def vit_block(x: f32[B, T, d], heads: int) -> f32[B, T, d] {
  x = x + nn.attention(nn.layernorm(x) as ln_1, heads, causal = false) as attn
  return x + nn.mlp(nn.layernorm(x) as ln_2) as mlp
}

model vit(x: f32[B, channels, image, image], y: i32[B]) {
  param patch_embed: f32[d, channels, patch, patch] = normal(0.02)
  param cls_token: f32[1, 1, d] = zeros
  param pos_embed: f32[1, n + 1, d] = normal(0.02)
  p = conv2d(x, patch_embed, stride = patch)
  p = transpose(reshape(p, B, d, n), 1, 2)
  h = concat(expand(cls_token, B, 1, d), p, axis = 1) + pos_embed
  for i in 0..layers {
    h = vit_block(h, heads) as blocks[i]
  }
  h = nn.layernorm(h[:, 0, :]) as norm
  return cross_entropy(nn.linear(h, classes) as head, y)
}

train vit {
  data = synthetic(16)
  batch = 4
  microbatches = 2
  optimizer = adamw(lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1)
  steps = 3
  seed = 14
}
