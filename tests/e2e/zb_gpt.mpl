# A GPT big enough that its passes take milliseconds on a CPU, on two stages with
# eight micro-batches: there zb's measured bubble should be below 1f1b's
# (tests/e2e/plan_vs_run.sh).
import nn

const vocab = 256
const ctx = 32
const d = 128
const heads = 4
const layers = 4

mesh(pp = 2)

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers @stage(i * 2 / layers) {
    x = nn.block(x, heads) as h[i]
  }
  x = nn.layernorm(x) as ln_f @stage(1)
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train gpt {
  data = synthetic(64)
  batch = 32
  seq = ctx
  microbatches = 8
  optimizer = adamw(lr = 1e-3)
  steps = 6
}
