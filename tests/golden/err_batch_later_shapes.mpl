# A batch that does not divide by the micro-batches is an error, and an error found after
# it quotes shapes with the batch the program gives ([3, 4]), not a part rounded down
# to 1 row ([1, 4]) (pass 103).
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  a = x @ transpose(w, 0, 1)
  return cross_entropy(x @ w, y)
}
train m { batch = 3; microbatches = 2; optimizer = sgd(lr = 0.1) }
