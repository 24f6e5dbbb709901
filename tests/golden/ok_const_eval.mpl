# Compile-time evaluation: C integer division, %, floats, math functions, logic.
const a = 7 / 2
const b = -7 / 2
const c = -7 % 3
const f = 1.0 / sqrt(16)
const g = exp(0.0) + log(1.0) + tanh(0.0) + abs(-2)
const big = a * 1000 + b
const ok = a == 3 and not (b == -4) or false

model m(x: f32[B, a], y: i32[B]) {
  h = x * f + g + full(big * 1.0, 1) * 0.0 + c
  if ok { h = h * 1.0 }
  return cross_entropy(h, y)
}

train m { batch = 2 }
