# args: --emit=ast
# `return y, aux` keeps its values in a list; `-> (t1, t2)` is a TYPES node.
def f(x: f32[..., n]) -> (f32[..., n], f32[]) {
  return x, mean(x)
}
def g(x: f32[n]) -> (f32[n]) {
  return x
}
