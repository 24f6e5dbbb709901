# Data flowing to an earlier stage: one error for a tensor however many earlier readers it
# has (pass 111).
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  a = relu(x) @stage(1)
  b = tanh(a) @stage(0)
  c = sin(a) @stage(0)
  return cross_entropy(b + c, y) @stage(1)
}
