# args: --emit=plan
# The whole dp x pp x tp mesh in the plan: a small Megatron GPT on 8 ranks with ZeRO-1
# (each replica keeps the AdamW state of half of every param, reduce-scatter, all-gather).
import nn

const vocab = 64
const ctx = 8
const d = 16
const heads = 2
const layers = 2

mesh(dp = 2, pp = 2, tp = 2)

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
  data = synthetic(16)
  batch = 4
  seq = ctx
  microbatches = 2
  optimizer = adamw(lr = 1e-3)
  grad_clip = 1.0
  zero = 1
  steps = 1
  seed = 5
}
