# A loop of exactly the most iterations unrolled (1000000) compiles (pass 119: `>=` in the
# check refused it with "this loop runs 1000000 times; at most 1000000 iterations are
# unrolled"); err_loop_trips has one more.
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..1000000 {
  }
  return cross_entropy(x, y)
}
train m { batch = 2 }
