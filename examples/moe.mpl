# examples/moe.mpl — a small mixture-of-experts language model: Llama-style attention, and
# a mixture of 4 SwiGLU experts with top-2 routing in every block; the experts' weights
# [experts, ...] are split over tp (expert parallelism: each tp rank holds experts / tp).
# The Switch Transformer load-balancing loss of every block is added with weight 0.01.
#   mplc examples/moe.mpl -o moe.job                (tp = 2: two experts per rank)
#   mplc examples/moe.mpl --mesh tp=4 -o moe.job    (one expert per rank)
# Its bigger setting: -D d=1024 -D layers=16 -D experts=8 -D hidden=2816 -D heads=16 -D ctx=1024.
import nn

const vocab = 256
const ctx = 64
const d = 96
const layers = 2
const heads = 4
const experts = 4
const top_k = 2
const hidden = 192
const aux_weight = 0.01

mesh(tp = 2)

model moe_lm(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as tok_embeddings
  aux = 0.0
  for i in 0..layers {
    x = x + nn.gqa_attention(nn.rmsnorm(x) as attention_norm[i], heads, heads) as attention[i]
    y, a = nn.moe(nn.rmsnorm(x) as ffn_norm[i], experts, hidden, top_k) as feed_forward[i]
    x = x + y
    aux = aux + a
  }
  x = nn.rmsnorm(x) as norm
  logits = x @ transpose(tok_embeddings.weight, 0, 1)
  return cross_entropy(logits, targets) + aux_weight * aux
}

train moe_lm {
  data = tokens("examples/data/tiny.bin")
  batch = 16
  seq = ctx
  microbatches = 2
  optimizer = adamw(lr = 3e-3, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1)
  grad_clip = 1.0
  steps = 200
  seed = 7
}
