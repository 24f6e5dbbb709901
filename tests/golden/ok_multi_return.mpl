# Defs that return several values (issue 13): `return y, aux` binds as `y, aux = f(x)`;
# `-> (t1, t2)` checks each. Instance names are a namespace of their own: `as exp`, `as
# attention` (a const here) and `as f` (the def itself) name instances, while `exp`,
# `attention` and `f` keep their meanings elsewhere.
const attention = 3
def f(x: f32[B, n]) -> (f32[B, n], f32[]) {
  param w: f32[n, n] = normal(0.02)
  y = x @ w
  return y, mean(y * y)
}
model m(x: f32[B, 4], y: i32[B]) {
  h, aux = f(x) as exp
  h, aux2 = f(exp(h)) as attention
  h, aux3 = f(h) as f
  return cross_entropy(h, y) + aux + aux2 * attention + aux3 * attention.w[0, 0]
}
train m { batch = 2 }
