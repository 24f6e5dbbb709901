# Reductions with axis / keepdims / over everything; softmax and log_softmax.
model m(x: f32[B, 3, 4], y: i32[B, 3]) {
  s = sum(x, axis = -1)
  mu = mean(x, 1, keepdims = true)
  mx = amax(x, axis = 2, keepdims = true)
  all = sum(x)
  allk = mean(x, keepdims = true)
  p = softmax(x - mx, axis = -1) + log_softmax(x, 1) + softmax(x)
  z = p + mu + all + allk + reshape(s, B, 3, 1)
  return cross_entropy(z, y)
}

train m { batch = 2 }
