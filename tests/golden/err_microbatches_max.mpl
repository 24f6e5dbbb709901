# args: --emit=graph --mesh dp=4
# microbatches has a bound, mplrun's (its product with dp wrapped to 0: mplc died of SIGFPE).
import nn
model m(x: f32[B, 32], y: i32[B]) {
  return cross_entropy(nn.linear(x, 10), y)
}

train m {
  batch = 8
  microbatches = 4611686018427387904
}
