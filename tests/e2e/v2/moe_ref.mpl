# nn.moe against its definition (tests/e2e/ops_v2.sh, tests/tools/v2_ref.py): the params
# come from --init (v2_ref.py init-moe), W and c are 0 and SGD runs at lr = 1, so one
# step leaves W = -y and c = -aux, which v2_ref.py checks against top-2 routing of 6
# tokens over 4 SwiGLU experts and the load-balancing loss, computed in float64.
import nn
model m(x: f32[B, 2]) {
  param X: f32[2, 3, 8] = normal(1.0)
  param W: f32[2, 3, 8] = zeros
  param c: f32[1] = zeros
  y, aux = nn.moe(X, 4, 6, 2) as moe
  return sum(y * W) + sum(c) * aux + 0.0 * sum(x)
}
train m { batch = 2; optimizer = sgd(lr = 1.0) }
