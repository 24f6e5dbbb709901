# tests/bench/llama.mpl — the Llama bench model (examples/llama.mpl's layers: RMSNorm, rotary
# embeddings, grouped-query attention, SwiGLU; vocab 256, tied output, AdamW), sized by -D:
# d 384, 6 layers, 6 heads, 2 key/value heads, hidden 1024, T 256, B 8. No @stage:
# `mplc --mesh pp=2` lets the balancer split it. Synthetic tokens, so no data file.
import nn

const vocab = 256
const ctx = 256
const d = 384
const layers = 6
const heads = 6
const kv_heads = 2
const hidden = 1024
const batch = 8

model llama(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as tok_embeddings
  for i in 0..layers {
    x = nn.llama_block(x, heads, kv_heads, hidden) as layers[i]
  }
  x = nn.rmsnorm(x) as norm
  logits = x @ transpose(tok_embeddings.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train llama {
  data = synthetic(64)
  batch = batch
  seq = ctx
  microbatches = 1
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, weight_decay = 0.01)
  steps = 10
}
