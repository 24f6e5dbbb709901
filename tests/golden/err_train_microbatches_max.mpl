# microbatches past the most, 65536 (pass 111), in the train block
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m {
  batch = 65537
  microbatches = 65537
}
