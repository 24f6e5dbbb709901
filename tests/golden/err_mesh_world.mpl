# A mesh of more than 4096 ranks is refused (mplrun called the job bad).
import nn
mesh(dp = 64, pp = 2, tp = 64)
model m(x: f32[B, 32], y: i32[B]) {
  return cross_entropy(nn.linear(x, 10), y)
}

train m { batch = 64 }
