# defs that return several values (issue 13): bound by as many names, typed by
# `-> (t1, t2)`; instance names are a namespace of their own (the consts attention and
# layers, the def f and the built-in exp share their names with instances here). One
# training step against the float64 reference evaluator (tests/e2e/ops_v2.sh).
const attention = 3
const layers = 2
def f(x: f32[B, n]) -> (f32[B, n], f32[]) {
  param w: f32[n, n] = normal(0.3)
  y = tanh(x @ w)
  return y, mean(y * y)
}
def pair(x: f32[B, n]) {
  return x * 2.0, x
}
model m(x: f32[B, 4], y: i32[B]) {
  h, aux = f(x) as exp
  for i in 0..layers {
    h, a = f(h) as layers[i]
    aux = aux + a
  }
  h, a3 = f(h) as attention
  h, a4 = f(h) as f
  p, q = pair(h)
  return cross_entropy(p + q * layers, y) + 0.1 * aux + a3 * attention + a4 + exp.w[0, 0] * attention.w[1, 1] * f.w[2, 2] * layers[1].w[0, 1]
}
train m { batch = 4 }
