# A tied embedding across two stages: wte.weight is read on stage 0 (the
# embedding) and on stage 1 (the unembedding), so each stage keeps a copy and
# their gradients are all-reduced before the update.
import nn

mesh(pp = 2)

model lm(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 16, 8) as wte @stage(0)
  x = gelu(nn.linear(x, 8)) @stage(1)
  logits = x @ transpose(wte.weight, 0, 1)
  return cross_entropy(logits, targets)
}

train lm {
  batch = 4
  seq = 4
  microbatches = 2
  optimizer = sgd(lr = 0.1)
}
