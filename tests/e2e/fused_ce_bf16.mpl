# The fused cross-entropy (mplc's default) in bf16 mixed precision: a one-layer GPT with
# the unembedding tied to the token embedding (x @ transpose(wte.weight, 0, 1), w [vocab, d])
# and 2500 classes, one block of rows. test_refstep checks it against the reference.
import nn

const vocab = 2500
const ctx = 8
const d = 16
const heads = 2

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  x = nn.block(x, heads) as h[0]
  x = nn.layernorm(x) as ln_f
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train gpt {
  data = synthetic(64)
  batch = 8
  seq = ctx
  microbatches = 2
  optimizer = adamw(lr = 1e-2, weight_decay = 0.1)
  grad_clip = 1.0
  steps = 3
  seed = 5
  precision = bf16
}
