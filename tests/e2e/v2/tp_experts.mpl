# Expert parallelism (issue 13): [experts, d, h] weights with @shard(0). The tokens
# (replicated) are broadcast against the split experts (tp_enter: their gradient is
# all-reduced), each rank runs its experts, and the gate-weighted sum over experts is a
# partial sum (one all-reduce). No all-gather in the forward pass; the backward gathers
# the gates' gradient ([experts, tokens, 1]), as routing needs every expert's
# (tests/e2e/tp_v2.sh; golden grad_tp_experts).
mesh(tp = 2)
model m(x: f32[B, 8], y: i32[B]) {
  param router: f32[8, 4] = normal(0.3)
  param w1: f32[4, 8, 6] = normal(0.3) @shard(0)
  param w3: f32[4, 8, 6] = normal(0.3) @shard(0)
  param w2: f32[4, 6, 8] = normal(0.3) @shard(0)
  param g: f32[8] = normal(1.0)
  xn = x * g
  gates = softmax(xn @ router, axis = -1)                  # [B, 4]
  h = tanh(xn @ w1) * (xn @ w3)                            # [4, B, 6]
  e = h @ w2                                               # [4, B, 8]
  out = sum(e * reshape(transpose(gates, 0, 1), 4, B, 1), axis = 0)
  return cross_entropy(out, y)
}
train m { batch = 4; optimizer = sgd(lr = 0.5, momentum = 0.9); steps = 3; seed = 3 }
