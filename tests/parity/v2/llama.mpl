# tests/parity/v2/llama.mpl — a small Llama for the PyTorch parity check (tests/parity/run_v2.sh):
# vocab 64, ctx 16, d 32, 2 nn.llama_block layers with 4 query and 2 key/value heads (GQA),
# SwiGLU hidden 48, RMSNorm eps 1e-5, rope base 10000, tied output (the unembedding is
# tok_embeddings.weight transposed, as Llama 3.2). Batch 4 in 2 micro-batches, 3 AdamW steps.
# Compiled at pp = 1 (the default), -D stages=2 (pp = 2: one layer per stage, the tied
# embedding on both), --mesh tp=2, and both; tests/parity/torch_v2.py is its float64 twin.
import nn

const vocab = 64
const ctx = 16
const d = 32
const layers = 2
const heads = 4
const kv_heads = 2
const hidden = 48
const eps = 1e-5
const stages = 1

mesh(pp = stages)

model llama(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as tok_embeddings
  for i in 0..layers @stage(i * stages / layers) {
    x = nn.llama_block(x, heads, kv_heads, hidden, eps) as layers[i]
  }
  x = nn.rmsnorm(x, eps) as norm @stage(stages - 1)
  logits = x @ transpose(tok_embeddings.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train llama {
  data = tokens("tests/parity/v2/tokens.bin")
  batch = 4
  seq = ctx
  microbatches = 2
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1)
  steps = 3
  seed = 11
}
