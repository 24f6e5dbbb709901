# nn.rope against its formula (tests/e2e/ops_v2.sh, tests/tools/v2_ref.py): with W = 0 and
# SGD at lr = 1, one step leaves W = -rope(X, 100), which v2_ref.py checks against
# y_i = x_i cos a - x_{i+hs/2} sin a, y_{i+hs/2} = x_{i+hs/2} cos a + x_i sin a,
# a = t * 100^(-2i/hs), computed in float64.
import nn
model m(x: f32[B, 2]) {
  param X: f32[3, 2, 5, 8] = normal(1.0)
  param W: f32[3, 2, 5, 8] = zeros
  return sum(nn.rope(X, 100.0) * W) + 0.0 * sum(x)
}
train m { batch = 2; optimizer = sgd(lr = 1.0) }
