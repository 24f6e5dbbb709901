# tests/parity/gpt_parity.mpl — the small GPT of tests/bench/torch_gpt.py's parity mode:
# vocab 64, ctx 16, d 32, 4 heads, 2 layers; batch 4 in 2 micro-batches, one AdamW step.
# tests/parity/run.sh loads init.safetensors, trains one step on tokens.bin and compares
# the params and the loss with PyTorch's (expected.safetensors, expected_loss.txt).
import nn

const vocab = 64
const ctx = 16
const d = 32
const heads = 4
const layers = 2

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
  data = tokens("tests/parity/tokens.bin")
  batch = 4
  seq = ctx
  microbatches = 2
  schedule = 1f1b
  optimizer = adamw(lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1)
  steps = 1
  seed = 0
}
