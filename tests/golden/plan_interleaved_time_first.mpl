# args: --emit=plan
# interleaved(2) at pp = 2 over blocks whose time and memory disagree (wide linear layers:
# much memory, little time; param-free h h^T h blocks: the reverse). The refinement of the
# split by ranks takes the faster split among those its memory estimate accepts: ranks 0
# and 1 busy 0.0345 and 0.0238 s (pass 119: comparing memory alone gave 0.0213 and 0.0369).
import nn
mesh(pp = 2)
model m(x: f32[B, 256], y: i32[B]) {
  h = x
  h = h + nn.linear(relu(nn.linear(h, 2048) as a0), 256) as b0
  h = h + tanh(h @ transpose(h, 0, 1)) @ h
  h = h + tanh(h @ transpose(h, 0, 1)) @ h
  h = h + nn.linear(relu(nn.linear(h, 2048) as a3), 256) as b3
  h = h + tanh(h @ transpose(h, 0, 1)) @ h
  h = h + nn.linear(relu(nn.linear(h, 256) as a5), 256) as b5
  h = h + tanh(h @ transpose(h, 0, 1)) @ h
  h = h + nn.linear(relu(nn.linear(h, 2048) as a7), 256) as b7
  logits = nn.linear(h, 16) as out
  return cross_entropy(logits, y)
}
train m {
  data = synthetic(64)
  batch = 256
  microbatches = 4
  schedule = interleaved(2)
  steps = 2
}
