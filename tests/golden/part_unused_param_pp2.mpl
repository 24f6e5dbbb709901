# args: --emit=partition
# (pass 114: a mutant placed it on the last stage; part_unused_param.mpl has one stage)
# A param nothing reads is kept on stage 0 (initialised, saved, never updated), also when
# there are several stages.
import nn
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  param unused: f32[4] = ones
  h = tanh(nn.linear(x, 4) as l0)
  h = nn.linear(h, 4) as l1
  return cross_entropy(h, y)
}
train m { batch = 2 }
