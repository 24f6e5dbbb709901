# args: --emit=schedule
# microbatches = 0 in the train block.
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(relu(x), y)
}
train m { microbatches = 0 }
