# A mixture-of-experts layer (nn.moe: top-2 of 4 SwiGLU experts, the load-balancing loss
# added with weight 0.01). tests/e2e/ops_v2.sh: one step against the float64 reference.
# tests/e2e/tp_v2.sh: tp = 2 and 4 (two experts, one expert per rank) train like tp = 1,
# with no all-gather in the forward pass.
import nn
const vocab = 64
const d = 16
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, d) as tok_embeddings
  y, aux = nn.moe(nn.rmsnorm(x) as norm, 4, 24, 2) as moe
  logits = nn.linear(x + y, vocab, use_bias = false) as output
  return cross_entropy(logits, targets) + 0.01 * aux
}
train m { batch = 4; seq = 8; optimizer = sgd(lr = 0.5, momentum = 0.9); steps = 3; seed = 1 }
