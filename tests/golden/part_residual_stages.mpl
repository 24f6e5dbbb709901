# args: --emit=partition
# Residual layers h = h + f(h), a layer a stage: each stage sends its input's gradient back to
# the stage before it once (grad s -> s-1), the residual's term summed where f's term is made;
# none goes past a stage.
import nn

mesh(pp = 4)

model m(x: f32[B, 64], y: i32[B]) {
  h = x
  for i in 0..4 @stage(i) {
    h = h + nn.linear(h, 64) as l[i]
  }
  return cross_entropy(h, y)
}

train m {
  batch = 8
  optimizer = sgd(lr = 0.1)
}
