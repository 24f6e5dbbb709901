# args: --mesh pp=1 --mesh tp=1 --emit=plan
# An option that takes one value, given twice: exit 2 (it replaced the first silently).
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m {
  batch = 4
}
