# A byte-level GPT on two pipeline stages with token data and AdamW: the model of
# the CLI tests (checkpoint/resume, trace, metrics, sampling). Small enough that a
# step takes milliseconds.
import nn

const vocab = 256
const ctx = 16
const d = 32
const heads = 2
const layers = 2

mesh(pp = 2)

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers @stage(i) {
    x = nn.block(x, heads) as h[i]
  }
  x = nn.layernorm(x) as ln_f @stage(1)
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train gpt {
  data = tokens("examples/data/tiny.bin")
  batch = 8
  seq = ctx
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 3e-3, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1)
  lr_schedule = cosine(3, 3e-4)   # warmup 3: steps 1..3 are the same in 3- and 6-step runs
  grad_clip = 1.0
  steps = 6
  seed = 11
}
