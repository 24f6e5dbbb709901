# args: --emit=graph -D width=6 -D use_bias=false -D scale=0.5 -D steps=7
# -D overrides consts (int, bool, float); later consts see the new value.
import nn
const width = 4
const use_bias = true
const scale = 2.0
const steps = 3
const twice = width * 2

model m(x: f32[B, 3], y: i32[B]) {
  h = nn.linear(x, twice, use_bias = use_bias) * scale
  return cross_entropy(h, y)
}

train m { batch = 2; steps = steps }
