# defs that return several values (issue 13): bound by as many names, typed by
# `-> (t1, t2)`; instance names are a namespace of their own (a const, a def and a
# built-in share names with instances here). One training step against the float64
# reference evaluator (tests/e2e/ops_v2.sh).
const attention = 3
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
  for i in 0..2 {
    h, a = f(h) as layers[i]
    aux = aux + a
  }
  h, a3 = f(h) as attention
  h, a4 = f(h) as f
  p, q = pair(h)
  return cross_entropy(p + q, y) + 0.1 * aux + a3 * attention + a4 + exp.w[0, 0] * attention.w[1, 1] * f.w[2, 2] * layers[1].w[0, 1]
}
train m { batch = 4 }
