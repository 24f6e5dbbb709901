# A row of a param broadcast over a batch of 64: its gradient is a column sum (a lane loop of
# 64) added into the param's gradient at w[k * 32 + o] (a loop split over the warp's lanes
# that reads back the elements it stores, each its own). mplc stopped with an internal error
# in cg_cuda on every -o of it (pass 38); test_cuda_jobs runs it on the mock GPU.
model m(x: f32[B, 32], y: i32[B]) {
  param w: f32[64, 32] = normal(0.1)
  h = x + w[0:1, :]
  return cross_entropy(h @ transpose(w, 0, 1), y)
}

train m {
  batch = 64
  steps = 3
}
