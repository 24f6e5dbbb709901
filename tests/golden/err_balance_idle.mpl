# args: --emit=partition
# Automatic balancing counts only the top-level statements that compute something: a
# statement that only makes a constant cannot be a stage of its own (it used to leave
# stage 0 with nothing to run).
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  c = full(1.0, B, 4)
  return cross_entropy(x * c, y)
}
