# imports cyc_b, which imports this module back and reads its const before it is read
import cyc_b
const ca = 1
def fa(x: f32[..., n]) -> f32[..., n] {
  return x * cyc_b.cb
}
