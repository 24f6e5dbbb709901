# Rules just past their edges, one error each (pass 111: a mutant accepted each, or dropped
# a hint, and every suite passed): concat of two dtypes and of two shapes, sum of a bool
# tensor, `not` of a float tensor, an amax whose axis broadcasting lost, 4096 parts of a
# split (allowed: the binding is the error), -1 for a new leading axis of expand, an arange
# target one past the classes; a def's two `...` bound to different dimensions, `as` on a
# def without params, compile-time 1.5 % 0.0, an absent optional param divided by a value,
# stack of two dtypes
def f(a: f32[..., c], b: f32[..., c]) -> f32[..., c] {
  return a
}
def g(x: f32[B, 4]) -> f32[B, 4] {
  return x * 2.0
}
model m(x: f32[B, 4], y: i32[B]) {
  f1 = f(x, x[0, :])
  g1 = g(x) as gg
  z = x * (1.5 % 0.0)
  param ob: f32[4] = zeros if false
  q = ob / x
  st = stack(x, cast(x, bf16))
  c = concat(x, cast(x, bf16), axis = 1)
  c2 = concat(x, x[:, 0:2], axis = 0)
  n = sum(x > 0.0)
  b = not x
  a = x - amax(x, axis = 1)
  s = split(full(1.0, 4096), 4096)
  e = expand(x, -1, B, 4)
  param w: f32[4, 7] = normal(0.1)
  return cross_entropy(x @ w, arange(B))
}
train m {
  batch = 8
}
