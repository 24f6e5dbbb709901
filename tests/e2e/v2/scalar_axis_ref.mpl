# A 0-d tensor takes axis 0 or -1 as a tensor of one element (torch wraps a 0-d tensor's dim
# so): softmax is 1, log_softmax 0, cumsum, sum, mean and amax are the value itself, argmax is
# 0. The loss is the sum of the squared differences from those, so it must be exactly 0
# (tests/e2e/lang_v2.sh reads it from --metrics); scalar_axis.mpl checks their gradients.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.5)
  s = sum(tanh(x @ w))                                  # rank 0
  d1 = softmax(s) - 1.0
  d2 = log_softmax(s, axis = 0)
  d3 = cumsum(s, -1) - s
  d4 = sum(s, 0) - s
  d5 = mean(s, -1, keepdims = true) - s
  d6 = amax(s, 0) - s
  d7 = cast(argmax(s, -1), f32)
  return d1 * d1 + d2 * d2 + d3 * d3 + d4 * d4 + d5 * d5 + d6 * d6 + d7 * d7
}
train m { batch = 2 }
