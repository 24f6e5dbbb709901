# args: --mesh tp=2
# Multi-query attention (kv_heads = 1) through nn.gqa_attention at tp = 2: wk and wv are
# column-parallel, so their one head's reshape moves the split onto the head size, and
# rope's split of it is refused; the error says the rule (a head count must divide by tp;
# pass 103: it was only in the third note) and a note names that reshape (pass 100).
import nn
const d = 32
model m(x: f32[B, 8, d], y: i32[B, 8]) {
  h = nn.gqa_attention(x, 4, 1) as attn
  return cross_entropy(h, y)
}
