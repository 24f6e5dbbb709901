# interleaved(64), the most chunks a rank takes (pass 111: a mutant refused it)
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m { batch = 2; schedule = interleaved(64) }
