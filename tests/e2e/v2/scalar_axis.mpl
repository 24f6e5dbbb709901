# The axis ops of a 0-d tensor (axis 0 or -1, as torch takes them) in one training step
# against the float64 reference and finite differences (tests/e2e/lang_v2.sh): softmax and
# log_softmax pass no gradient, cumsum, sum, mean and amax pass it whole
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.5)
  s = sum(tanh(x @ w)) * 0.1
  t = softmax(s) * 3.0 + log_softmax(s * s, -1) + cumsum(s, 0) * 2.0 + sum(s, -1) * s
  u = mean(s * s, 0, keepdims = true) + amax(s, -1) * 0.5 + cast(argmax(s, 0), f32)
  param v: f32[4, 5] = normal(0.5)
  return cross_entropy(x @ v * t * u, y)
}
train m { batch = 4 }
