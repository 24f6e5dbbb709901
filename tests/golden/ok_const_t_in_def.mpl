# args: --emit=graph
# A const T that only a def reads is the const there (the model's T is seq only inside the
# model): accepted, the def's T is 8 (pass 63: refused once the model-side check came in).
const T = 8
def scale(x: f32[..., n]) {
  return x * (T * 1.0)
}
model m(x: f32[B, 4]) {
  return mean(scale(x))
}
