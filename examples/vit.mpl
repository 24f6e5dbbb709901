# examples/vit.mpl — a small Vision Transformer: 32x32 RGB images cut into 4x4 patches by a
# strided convolution (the patch embedding), a class token, learned position embeddings,
# non-causal pre-LayerNorm attention blocks, and a linear head on the class token.
# It trains on synthetic images (random, with random labels: it can memorise them); MPL
# reads no image files yet (data is synthetic(n) or a token file). Its bigger setting is ViT-S/16 on
# 224x224 images: -D image=224 -D patch=16 -D d=384 -D layers=12 -D heads=6. Against timm's
# ViT: the patch convolution has no bias, LayerNorm's eps is 1e-5 (timm 1e-6), GELU the tanh
# form (ViT's is exact erf), and the class token and position embeddings get AdamW's decay
# (as every param of 2 or more dimensions here; timm leaves them out).
import nn

const image = 32
const patch = 4
const channels = 3
const classes = 10
const d = 96
const layers = 4
const heads = 4
const n = (image / patch) * (image / patch)

mesh(pp = 2)

def vit_block(x: f32[B, T, d], heads: int) -> f32[B, T, d] {
  x = x + nn.attention(nn.layernorm(x) as ln_1, heads, causal = false) as attn
  return x + nn.mlp(nn.layernorm(x) as ln_2) as mlp
}

model vit(x: f32[B, channels, image, image], y: i32[B]) {
  param patch_embed: f32[d, channels, patch, patch] = normal(0.02)
  param cls_token: f32[1, 1, d] = zeros
  param pos_embed: f32[1, n + 1, d] = normal(0.02)
  p = conv2d(x, patch_embed, stride = patch)                     # [B, d, 8, 8]
  p = transpose(reshape(p, B, d, n), 1, 2)                       # [B, n, d]
  h = concat(expand(cls_token, B, 1, d), p, axis = 1) + pos_embed
  for i in 0..layers @stage(i * 2 / layers) {
    h = vit_block(h, heads) as blocks[i]
  }
  h = nn.layernorm(h[:, 0, :]) as norm @stage(1)
  return cross_entropy(nn.linear(h, classes) as head, y)
}

train vit {
  data = synthetic(256)
  batch = 32
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, weight_decay = 0.05)
  steps = 100
  seed = 3
}
