# Names given twice: a model, a def's parameter, a model's input (Python refuses duplicate
# parameters; the language refuses a second def, const or train block).
def f(a: float, a: float) -> float {
  return a
}
model m(x: f32[B, 4], x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x * f(1.0, 2.0), y)
}
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m { batch = 4 }
