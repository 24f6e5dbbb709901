# The fused cross-entropy (compiler/ce_fuse.c, mplc's default): a one-layer GPT whose
# untied head x @ lm_head.weight ([d, vocab], no transpose) has 2500 classes, so the step
# runs one block of all 32 rows of a micro-batch. test_refstep checks it against the float64
# reference; tests/e2e/fused_ce.sh trains it fused and unfused.
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
  logits = nn.linear(x, vocab, use_bias = false) as lm_head
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
}
