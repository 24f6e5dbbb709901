# A loop whose span passes 2^63: its trip count (it unrolled 20M steps first).
model m(x: f32[B, 4], y: i32[B]) {
  h = x
  for i in -9223372036854775807..9223372036854775807 {
    h = h * 1.0
  }
  return cross_entropy(h, y)
}

train m { batch = 2 }
