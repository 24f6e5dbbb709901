# A small Llama (nn.llama_block: rmsnorm, rope, grouped-query sdpa, SwiGLU) with Meta's
# param names. tests/e2e/ops_v2.sh: one step against the float64 reference; the names;
# --init refuses a tensor of another shape. tests/e2e/tp_v2.sh: tp = 2 and 4 train
# like tp = 1 (heads and kv_heads divide by 4), with no all-gather.
import nn
const vocab = 64
const d = 32
const heads = 8
const kv_heads = 4
const hidden = 48
const layers = 2
model llama(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as tok_embeddings
  for i in 0..layers {
    x = nn.llama_block(x, heads, kv_heads, hidden) as layers[i]
  }
  logits = nn.linear(nn.rmsnorm(x) as norm, vocab, use_bias = false) as output
  return cross_entropy(logits, targets)
}
train llama { batch = 4; seq = 8; optimizer = sgd(lr = 0.5, momentum = 0.9); steps = 3; seed = 1 }
