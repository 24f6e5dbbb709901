# args: --emit=partition --mesh pp=3
# Automatic balancing counts only statements whose values the loss needs: z and w are
# computed and never read, so they join the next statement rather than being a segment of
# their own (the balancer gave the costly z a stage alone, which then idled: busy 0,
# bubble 1.000, as nothing the step needs runs there).
import nn

mesh(pp = 3)

model m(x: f32[B, 16], y: i32[B]) {
  h = relu(nn.linear(x, 16) as a)
  g = relu(nn.linear(h, 16) as c)
  z = relu(nn.linear(x, 512) as d)
  w = sum(z * z)
  return cross_entropy(nn.linear(g, 4) as b, y)
}

train m {
  batch = 8
  optimizer = sgd(lr = 0.1)
}
