# a module with a const of its own (err_define_module_const)
const hidden = 8
def widen(x: f32[B, n]) -> f32[B, hidden] {
  param w: f32[n, hidden] = normal(0.1)
  return x @ w
}
