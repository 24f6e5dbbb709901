# args: --emit=graph
# A def declared -> float returns a float even when its body computes an int, as a float
# argument is one (pass 52): third(3) / 2 is 1.5 (the full() below), not 1.
def third(n: int) -> float {
  return n
}
model m(x: f32[B, 4]) {
  return mean(x) * cast(third(3) / 2, f32)
}
