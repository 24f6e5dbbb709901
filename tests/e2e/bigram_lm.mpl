# tests/e2e/bigram_lm.mpl — a bigram token model: the logits at a position are that token's
# embedding times a head, so --sample's greedy text can be computed from the saved params
# in float64 by tests/tools/bigram_greedy.py, independently of mplrun (tests/e2e/
# sample_mesh.sh). The head is split over tp (a partial sum, all-reduced) when tp > 1.
const vocab = 256

model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, vocab, 16) as wte
  param head: f32[16, vocab] = normal(0.5) @shard(0)
  return cross_entropy(x @ head, targets)
}

train m {
  data = tokens("examples/data/tiny.bin")
  batch = 4
  seq = 8
  optimizer = adamw(lr = 1e-2)
  steps = 3
}
