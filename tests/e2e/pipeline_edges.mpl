# Two corners of the update phase and the memory plan on two pipeline stages
# (tests/e2e/schedules.sh: params bitwise those of one stage, -D second=0 --mesh pp=1;
# tests/unit/test_refstep.c: loss and gradients at pp = 2 against the float64 reference;
# tests/unit/test_cuda_jobs.c: the mock GPU's losses and gradients those of the cpu device):
#  - l0.weight is read on both stages, but the second read (argmax) has no gradient: stage
#    1's copy gets the gradient of stage 0's one use (mplc emitted no GRAD_SUM to receive
#    it; mplrun refused the job);
#  - the loss is a reshape of a product, so its buffer is the product's (an alias): it must
#    live to the end of the step, where a GPU reads every micro-batch's loss (the plan kept
#    the alias, not the buffer, and later values were placed over it).
import nn

const second = 1

mesh(pp = 2)

model m(x: f32[B, 16], y: i32[B]) {
  h = relu(nn.linear(x, 16) as l0) @stage(0)
  h = h + sum(one_hot(argmax(l0.weight, 0), 16), axis = 0) @stage(second)
  h = relu(nn.linear(h, 32)) @stage(second)
  logits = nn.linear(h, 10) @stage(second)
  return reshape(reshape(cross_entropy(logits, y), 1) * 2.0)
}

train m {
  data = synthetic(64)
  batch = 16
  microbatches = 4
  schedule = 1f1b
  optimizer = adamw(lr = 1e-2)
  grad_clip = 1.0
  steps = 3
  seed = 1
}
