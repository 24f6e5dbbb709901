# tests/bench/gpt.mpl — the GPT bench models (vocab 256, tied unembedding, AdamW), sized by
# -D: the small one is the default (d 384, 6 layers, 6 heads, T 256, B 8); the wide one is
#   mplc tests/bench/gpt.mpl -D d=768 -D layers=4 -D heads=12 -D ctx=512 -D batch=4
# No @stage: `mplc --mesh pp=2` lets the balancer split it. Synthetic tokens, so no data file.
import nn

const vocab = 256
const ctx = 256
const d = 384
const heads = 6
const layers = 6
const batch = 8

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers {
    x = nn.block(x, heads) as h[i]
  }
  x = nn.layernorm(x) as ln_f
  logits = x @ transpose(wte.weight, 0, 1)        # tied unembedding
  return cross_entropy(logits, targets)
}

train gpt {
  data = synthetic(64)
  batch = batch
  seq = ctx
  microbatches = 1
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, weight_decay = 0.01)
  steps = 10
}
