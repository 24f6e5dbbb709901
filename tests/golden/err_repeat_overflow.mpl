# repeat's count times the dimension past 2^63: an error (it wrapped to a small shape).
model m(x: f32[B, 3], y: i32[B]) {
  z = repeat(x, 6148914691236517206, 1)
  return cross_entropy(z, y)
}

train m { batch = 2 }
