# tests/e2e/small_gpt.mpl in bf16 mixed precision (test_refstep checks its step against the
# reference, on one stage and on pipelines).
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
  optimizer = adamw(lr = 1e-2, weight_decay = 0.1)
  grad_clip = 1.0
  steps = 3
  seed = 7
  precision = bf16
}
