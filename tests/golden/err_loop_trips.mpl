# One iteration more than the most unrolled (ok_loop_max_trips has exactly 1000000).
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..1000001 {
  }
  return cross_entropy(x, y)
}
train m { batch = 2 }
