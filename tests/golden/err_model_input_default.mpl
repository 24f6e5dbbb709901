# A model input's default is refused (pass 52: accepted and never read).
model m(x: f32[B, 8], w: f32[B, 8] = 3) {
  return mean(x * w)
}
