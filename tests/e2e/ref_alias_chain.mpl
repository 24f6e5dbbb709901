# Random program 8100021 (tests/tools/randprog.py), kept (pass 112): its reshapes of a conv2d's
# and a sum's results make aliases of aliases, and only it showed a plan that resolved such a
# chain one step (the root freed while the last alias was still read: a gradient off by 0.45).
# ops_v2.sh checks a step against the float64 reference; plan_shadow.sh runs it shuffled.
import nn

mesh(pp = 2)
model m(x: f32[B, 3, 4], y: i32[B, 3]) {
  t1 = x + embedding(y, 7, 4) as emb
  param p1: f32[1, 1, 2, 2] = normal(0.5)
  t2 = conv2d(reshape(t1, B, 1, 3, 4), p1, stride = 1, padding = 0)
  t3 = reshape(sum(t2, axis = 1), B, 6)
  param p2: f32[6, 12] = normal(0.5)
  t4 = reshape(t3 @ p2, B, 3, 4)
  param p3: f32[4, 3] = normal(0.3)
  t5 = exp(tanh((t4 @ p3) * 0.3) * 3.0)
  t6 = amax(t5, axis = 0, keepdims = true)
  t7 = t5 * 0.5 - t6 * 0.2
  t8 = t7 - amax(t7, axis = 2, keepdims = true)
  param p4: f32[3, 4] = uniform(-0.6, 0.6)
  t9 = t4 + t8 @ p4
  logits = t9 @ transpose(emb.weight, 0, 1)
  return cross_entropy(logits, y)
}
train m {
  batch = 1
  seq = 3
  microbatches = 1
  schedule = sequential
  precision = bf16
  seed = 21
}
