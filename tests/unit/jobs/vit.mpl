# examples/vit.mpl on one device, smaller (test_cuda_jobs): a strided convolution as the
# patch embedding, a class token, non-causal attention blocks (head size 16), a linear head.
import nn

const image = 16
const patch = 4
const channels = 3
const classes = 10
const d = 32
const layers = 2
const heads = 2
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
  data = synthetic(64)
  batch = 8
  microbatches = 2
  optimizer = adamw(lr = 1e-3, weight_decay = 0.05)
  steps = 3
  seed = 3
}
