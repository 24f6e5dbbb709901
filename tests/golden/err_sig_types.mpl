# A def's declared types are checked (pass 52): -> int, -> float and -> bool take a
# compile-time value of that kind (a tensor, a float or an int were let through), a
# tensor result type a tensor (2.5 was let through), int[...] is no tensor type (it
# matched any tensor), and a type holds one '...'.
def half(x: f32[..., n]) -> int {
  return x * 0.5
}
def scale(n: int) -> f32[n] {
  return 2.5
}
def flag(n: int) -> bool {
  return n
}
def count(n: int) -> int {
  return n / 2.0
}
def ints(x: int[..., n]) {
  return x
}
def two(x: f32[..., n, ...]) {
  return x
}
model m(x: f32[B, 8]) {
  return mean(half(x)) * scale(3) * cast(flag(1), f32) * cast(count(3), f32)
}
