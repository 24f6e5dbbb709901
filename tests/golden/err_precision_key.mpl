# precision is a word: f32, tf32 or bf16.
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}

train m {
  batch = 2
  precision = f16
}
