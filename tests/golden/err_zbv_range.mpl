# args: --emit=graph --schedule zbv
# zbv on pp = 2 gives stages 0..3 (two chunks per rank, in a V); 4 is out of range.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  a = relu(x) @stage(0)
  b = relu(a) @stage(1)
  c = relu(b) @stage(2)
  d = relu(c) @stage(4)
  return cross_entropy(d, y) @stage(3)
}
