# tests/gpu/models/gpt_sgd.mpl — the GPU-vs-CPU comparison model: a small GPT with no
# @stage (mplc --mesh pp=N balances it), trained with SGD and momentum and gradient
# clipping. SGD, not AdamW: the key part of c_attn.bias has a gradient that is zero in
# exact arithmetic, and AdamW turns its rounding noise (different on CPU and GPU) into
# updates of about lr; SGD keeps noise at noise size, so params after 3 steps agree
# within 1e-4 relative.
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
  microbatches = 4
  schedule = 1f1b
  optimizer = sgd(lr = 0.05, momentum = 0.9)
  grad_clip = 1.0
  steps = 3
  seed = 7
}
