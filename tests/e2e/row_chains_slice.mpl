# A row statistic read in another row (tests/unit/test_refstep.c against the float64
# reference; random program 933): t4[:, 1:2, :] reads rmsnorm's statistics of row 1 in
# every row of the kernel, so the squares its mean sums must not be stored in the row
# kernel's first loop and read back there for row 1 (the other rows are other outer
# iterations, not yet stored): the loss came out 18.76 against the reference's 2.41.
import nn

mesh(pp = 1)

model m(x: f32[B, 4, 4], y: i32[B, 4]) {
  t1 = x + embedding(y, 11, 4) as emb
  t2 = tanh(t1)
  t4 = t2 + nn.rmsnorm(t2)
  t5 = t4 + t4[:, 1:2, :]
  logits = t5 @ transpose(emb.weight, 0, 1)
  return cross_entropy(logits, y)
}

train m {
  batch = 2
  seq = 4
  optimizer = sgd(lr = 0.02)
  seed = 933
}
