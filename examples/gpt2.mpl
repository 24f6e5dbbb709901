# examples/gpt2.mpl — GPT-2 small (124M params) on four pipeline stages.
#
# No @stage anywhere: with pp > 1 the compiler balances the body's top-level statements
# (the embeddings, the 12 blocks, the final LayerNorm and the tied unembedding) over the
# four stages itself. Param names are GPT-2's (wte, wpe, h.N.ln_1, h.N.attn.c_attn, ...,
# ln_f) with weights stored [in, out] as in GPT-2's Conv1D, so a GPT-2 safetensors loads
# with `mplrun JOB --init model.safetensors` (tied lm_head: wte only).
#
#   build/mplc examples/gpt2.mpl --emit=plan     # memory per rank, FLOPs, bubble
#   build/mplc examples/gpt2.mpl --mesh pp=4,tp=2,dp=2 --emit=plan   # 16 ranks: Megatron tp x dp
#   build/mplc examples/gpt2.mpl -o gpt2.job && build/mplrun gpt2.job --data train.bin
import nn

const vocab = 50257
const ctx = 1024
const d = 768
const heads = 12
const layers = 12

mesh(pp = 4)

model gpt2(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as wte
  x = x + embedding(arange(T), ctx, d) as wpe
  for i in 0..layers {
    x = nn.block(x, heads, 0.02 / sqrt(2.0 * layers)) as h[i]   # GPT-2's c_proj init: 0.02 / sqrt(2 * layers)
  }
  x = nn.layernorm(x) as ln_f
  logits = x @ transpose(wte.weight, 0, 1)        # tied unembedding
  return cross_entropy(logits, targets)
}

train gpt2 {
  data = tokens("examples/data/tiny.bin")         # any llm.c token file (--data overrides)
  batch = 16
  seq = ctx
  microbatches = 8
  schedule = 1f1b
  optimizer = adamw(lr = 6e-4, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1)
  lr_schedule = cosine(100, 6e-5)
  grad_clip = 1.0
  steps = 1000
  seed = 1337
}
