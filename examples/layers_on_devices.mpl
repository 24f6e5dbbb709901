# examples/layers_on_devices.mpl — plain layer placement ("model parallelism" as
# in the early days): each layer on its own device, one batch at a time.
import nn

const width = 256

mesh(pp = 4)

model net(x: f32[B, 64], y: i32[B]) {
  h = tanh(nn.linear(x, width) as layer0) @device(0)
  h = tanh(nn.linear(h, width) as layer1) @device(1)
  h = tanh(nn.linear(h, width) as layer2) @device(2)
  logits = nn.linear(h, 10) as head @device(3)
  return cross_entropy(logits, y)
}

train net {
  data = synthetic(512)
  batch = 64
  schedule = sequential
  optimizer = adamw(lr = 1e-3)   # SGD hardly moves three tanh layers of normal(0.02) weights
  steps = 50
}
