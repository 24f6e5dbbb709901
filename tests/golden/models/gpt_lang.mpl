# The GPT of LANGUAGE.md ("A complete program"), as written there: two stages,
# a tied unembedding.
import nn

const vocab = 256
const ctx = 128
const d = 192
const heads = 6
const layers = 4

mesh(pp = 2)

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers @stage(i * 2 / layers) {
    x = nn.block(x, heads) as h[i]
  }
  x = nn.layernorm(x) as ln_f @stage(1)
  logits = x @ transpose(wte.weight, 0, 1)        # tied unembedding
  return cross_entropy(logits, targets)
}

train gpt {
  data = tokens("examples/data/tiny.bin")   # llm.c token file
  batch = 16
  seq = ctx
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1)
  steps = 200
  seed = 1337
}
