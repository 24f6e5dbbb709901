# Unrolled for, compile-time if/else; names bound inside stay bound after.
const n = 3
const wide = true

model m(x: f32[B, 4], y: i32[B]) {
  acc = x
  for i in 0..n {
    if i % 2 == 0 {
      acc = acc + x * i
    } else {
      acc = acc - x
    }
    last = i
  }
  if wide and not (last < 2) {
    k = 4
  } else {
    k = 1
  }
  for j in 5..5 {
    acc = acc * 100.0
  }
  return cross_entropy(acc * k, y)
}

train m { batch = 2 }
