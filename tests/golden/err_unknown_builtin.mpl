# Unknown functions: a misspelt built-in gets its name, PyTorch's names the language's form.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  a = sofmax(x @ w, axis = -1)
  b = cat(a, a, axis = 1)
  c = clamp(a, 0.0, 1.0)
  d = max(a, axis = 1)
  e = zeros(4)
  return cross_entropy(x @ w, y)
}
