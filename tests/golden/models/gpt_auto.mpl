# A small GPT with no @stage anywhere: with pp > 1 the balancer splits its
# top-level statements (loops unrolled) over the stages. bsz is the global batch.
import nn

const vocab = 32
const ctx = 8
const d = 16
const heads = 2
const layers = 4
const bsz = 24

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
  batch = bsz
  seq = ctx
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3)
  steps = 2
}
