# tests/e2e/ops_v2_int_edges.mpl — run-time integer and NaN edges, as the kernels compute them
# and the float64 reference must too (tests/e2e/ops_v2.sh: test_refstep): a cast of f32 to
# i32 truncates, saturates past i32's range and gives 0 for NaN; i32 products, sums and
# cumulative sums wrap at 32 bits (s and c are cast straight to f32: in wrapped, an i32 add
# after the sum wrapped it again, so the sum's own wrap was unseen, pass 108); relu keeps a
# NaN (as max(x, 0) and PyTorch). The reference once kept 1e10 and NaN through the cast,
# computed i32 exactly and turned relu(NaN) into 0.
import nn

model m(x: f32[B, 4], y: i32[B]) {
  h = nn.linear(x, 4)
  big = cast(h * 1e10, i32)
  nan0 = cast(log(x), i32)
  w = cast(x * 1e5, i32)
  wrapped = w * w + sum(w * w * 3, axis = 1, keepdims = true)
  s = sum(w * w, axis = 1)
  c = cumsum(w * w, 1)
  r = relu(log(x))
  isnum = where(r == r, x * 0.0 + 1.0, x * 0.0)
  extra = (mean(cast(big, f32)) * 1e-12 + mean(cast(nan0, f32)) * 0.01 + mean(isnum) * 0.1 +
           mean(cast(wrapped, f32)) * 1e-11 + mean(cast(s, f32)) * 1e-11 + mean(cast(c, f32)) * 1e-11)
  return cross_entropy(h, y) + extra
}

train m {
  batch = 8
  steps = 3
  optimizer = sgd(lr = 0.1)
}
