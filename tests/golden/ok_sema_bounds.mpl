# Values at the edges of the rules, each accepted (pass 111: a mutant refused or changed each
# and every suite passed): the i32 bounds themselves, relu/abs/neg of an i32 tensor (as torch),
# a reshape to the shape x has is no op, an int passed to a float parameter divides as a float
# (1.5), normal(0) and uniform(a, a), `and`/`or` folded with their short circuit (4 + 20 + 300
# = 324), compile-time % on floats is C's fmod (-1.0 % 3.0 is -1) and on ints C's (-7 % 3 is
# -1), dropout(x, 1.0), an arange of exactly the classes as targets, a param of rank 8 (the
# most), `...` matching no dimension
def half(a: float) -> float {
  return a / 2
}
def twice(v: f32[..., c]) -> f32[..., c] {
  return v * 2.0
}
model m(x: f32[B, 4], y: i32[B]) {
  k = (y + 2147483647) - (y + -2147483648)
  r = relu(y - 1) + abs(y - 2) + -y
  param w: f32[4, 5] = normal(0)
  param u: f32[4, 4] = uniform(0.5, 0.5)
  param r8: f32[1, 1, 1, 1, 1, 1, 1, 4] = ones
  t = twice(sum(x, axis = 0)) * sum(r8)
  s = 0
  if false or true { s = s + 4 }
  if true or 1 / 0 > 0 { s = s + 20 }
  if true and true { s = s + 300 }
  if false and 1 / 0 > 0 { s = s + 5000 }
  c = -1.0 % 3.0 + cast(-7 % 3, f32)
  d = dropout(x @ u, 1.0)
  h = reshape(x, B, 4) * half(3) * s * c + t
  return cross_entropy(h + d + cast(reshape(k + r, B, 1), f32), y) + cross_entropy(x[0:5, :] @ w, arange(5))
}
train m {
  batch = 8
}
