# args: --emit=grad
# The gradients of the v2 ops: sin, cos, silu and % (the divisor's is -floor(a / b)),
# cumsum (a reverse cumsum), topk's values and gather (gather_grad sums into x), conv2d
# (col2im sums the patches back); floor, argmax, one_hot and the check have none.
model m(x: f32[B, 4, 6], k: i32[B, 4, 2], img: f32[B, 2, 5, 5], y: i32[B]) {
  param w: f32[6, 6] = normal(0.1)
  param c: f32[3, 2, 3, 3] = normal(0.1)
  param c2: f32[2, 3, 2, 2] = normal(0.1)
  h = x @ w
  a = sin(h) * cos(h) + silu(h) + h % (abs(h) + 1.0) + floor(h)
  s = cumsum(a, 1)
  v, i = topk(s, 2)
  g = gather(a, k, 2)
  p = conv2d(relu(conv2d(img, c, padding = 1)), c2, stride = 2)
  z = sum(v, axis = 2) + sum(g, axis = 2) + mean(mean(p, axis = 3), axis = 2)[:, 0:1]
  return cross_entropy(z, y)
}
train m { batch = 2 }
