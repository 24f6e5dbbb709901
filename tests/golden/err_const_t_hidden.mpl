# A const named T (or B) of another value than the model's T (seq) is refused: inside the
# model T is the sequence length, and the const silently became 64 there (pass 61).
const T = 2048
model m(x: f32[B, T, 8]) {
  param p: f32[1, T, 8] = zeros
  return mean(x + p)
}
train m {
  batch = 2
}
