# args: --emit=partition
# A GPT of the stdlib's blocks (two) on pp = 2 x tp = 2: every collective that sharding
# inserts is here — per block, tp_enter before c_attn and c_fc (their gradients
# all-reduced), one all-reduce after c_proj of attention and of the mlp (each
# row-parallel product a partial sum), and none of them an all-gather.
import nn

mesh(pp = 2, tp = 2)

model gpt(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 32, 16) as wte
  x = x + embedding(arange(T), 8, 16) as wpe
  x = nn.block(x, 2) as h[0] @stage(0)
  x = nn.block(x, 2) as h[1] @stage(1)
  x = nn.layernorm(x) as ln_f @stage(1)
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets) @stage(1)
}

train gpt {
  batch = 4
  seq = 8
  microbatches = 2
}
