# A chain of n multiplies by one weight vector, fused: the forward kernel stored one of
# every few products for the backward, each its own argument, and LLVM's alias analysis
# of a kernel compares every pair of arguments against every scope: at n = 4,000 one
# kernel of 448 arguments took 3.3 s of a compile, at n = 20,000 over 4 minutes. A group
# now holds at most 128 ops (fuse.c), so kernels stay small and the bits stay the same
# (test_refstep: the float64 reference; compile_jobs.sh: n = 2,000).
const n = 600
const d = 16

model m(x: f32[B, d], y: f32[B, d]) {
  param w: f32[d] = uniform(0.97, 1.03)
  h = x
  for i in 0..n {
    h = h * w
  }
  return mean((h - y) * (h - y))
}

train m {
  data = synthetic(64)
  batch = 4
  optimizer = sgd(lr = 0.1)
  steps = 2
}
