# tests/parity/v2/moe.mpl — a small mixture-of-experts LM for the PyTorch parity check
# (tests/parity/run_v2.sh): vocab 64, ctx 16, d 16, 2 layers, each grouped-query attention
# (4 query, 2 key/value heads) and nn.moe with 4 SwiGLU experts (hidden 24), top-2 routing;
# every layer's Switch load-balancing loss is added with weight 0.1. Untied output. Batch 4
# in 2 micro-batches (the aux loss is computed per micro-batch), 3 AdamW steps. Compiled at
# tp = 1 and --mesh tp=2 (expert parallelism: two experts per rank); tests/parity/torch_v2.py
# is its float64 twin.
import nn

const vocab = 64
const ctx = 16
const d = 16
const layers = 2
const heads = 4
const kv_heads = 2
const experts = 4
const top_k = 2
const hidden = 24
const aux_weight = 0.1

model moe_lm(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as tok_embeddings
  aux = 0.0
  for i in 0..layers {
    x = x + nn.gqa_attention(nn.rmsnorm(x) as attention_norm[i], heads, kv_heads) as attention[i]
    y, a = nn.moe(nn.rmsnorm(x) as ffn_norm[i], experts, hidden, top_k) as feed_forward[i]
    x = x + y
    aux = aux + a
  }
  x = nn.rmsnorm(x) as norm
  logits = nn.linear(x, vocab, false) as output
  return cross_entropy(logits, targets) + aux_weight * aux
}

train moe_lm {
  data = tokens("tests/parity/v2/tokens.bin")
  batch = 4
  seq = ctx
  microbatches = 2
  optimizer = adamw(lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1)
  steps = 3
  seed = 12
}
