# examples/llama.mpl — a small Llama (RMSNorm, rotary embeddings, grouped-query attention,
# SwiGLU) trained on the bytes of tiny.txt, on two pipeline stages.
#
# Its bigger setting is Llama-3.2-1B's shape (vocab 128256, d 2048, 16 layers, 32 query and
# 8 key/value heads, hidden 8192, rope base 500000, RMSNorm eps 1e-5, tied embeddings), which
# compiles and plans at pp = 4 x tp = 2:
#   mplc examples/llama.mpl -D vocab=128256 -D ctx=2048 -D d=2048 -D layers=16 -D heads=32 \
#     -D kv_heads=8 -D hidden=8192 -D base=500000.0 -D eps=1e-5 -D batch=8 -D stages=4 \
#     --mesh tp=2 --emit=plan
# (the tokens of a real run come from an llm.c token file with that vocabulary: --data FILE).
# The shape only: Llama 3.1 and 3.2 also rescale the rotary frequencies (rope_type llama3,
# factor 32), which nn.rope does not, so their released weights would not compute as in
# Meta's code here.
import nn

const vocab = 256
const ctx = 64
const d = 128
const layers = 4
const heads = 4
const kv_heads = 2
const hidden = 344       # about 8/3 d, as Llama's SwiGLU
const base = 10000.0
const eps = 1e-6
const batch = 16
const stages = 2         # pipeline stages: the layers are cut evenly over them

mesh(pp = stages)

model llama(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as tok_embeddings
  for i in 0..layers @stage(i * stages / layers) {
    x = nn.llama_block(x, heads, kv_heads, hidden, eps, base) as layers[i]
  }
  x = nn.rmsnorm(x, eps) as norm @stage(stages - 1)
  logits = x @ transpose(tok_embeddings.weight, 0, 1)   # tied output, as Llama 3.2
  return cross_entropy(logits, targets)
}

train llama {
  data = tokens("examples/data/tiny.bin")
  batch = batch
  seq = ctx
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 3e-3, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1)
  lr_schedule = cosine(10, 3e-4)
  grad_clip = 1.0
  steps = 200
  seed = 42
}
