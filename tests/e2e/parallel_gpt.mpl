# The small GPT for the data- and tensor-parallel tests: nn's blocks are Megatron
# tensor-parallel (column/row-parallel linears, heads split over tp). SGD with
# momentum, so that parameters after a few steps compare cleanly across meshes.
import nn

const vocab = 64
const ctx = 16
const d = 32
const heads = 4
const layers = 4

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers {
    x = nn.block(x, heads) as h[i]
  }
  x = nn.layernorm(x) as ln_f
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train gpt {
  data = synthetic(32)
  batch = 8
  seq = ctx
  microbatches = 2
  optimizer = sgd(lr = 0.5, momentum = 0.9)
  grad_clip = 1.0
  steps = 3
  seed = 11
}
