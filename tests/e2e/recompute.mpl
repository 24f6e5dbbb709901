# A small GPT on two stages with @recompute on its blocks and a tied embedding:
# the recomputed forward must give the same gradients as the stashed one.
import nn

const vocab = 32
const ctx = 8
const d = 16
const heads = 2

mesh(pp = 2)

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..2 @stage(i) @recompute {
    x = nn.block(x, heads) as h[i]
  }
  x = nn.layernorm(x) as ln_f @stage(1)
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train gpt {
  data = synthetic(16)
  batch = 4
  seq = ctx
  microbatches = 2
  optimizer = sgd(lr = 0.1, momentum = 0.9)
  steps = 3
}
