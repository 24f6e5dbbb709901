# @stage(pp) with no other stage past 0: named as out of range, not as stage 1 left empty
# (pass 111)
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  a = tanh(x) @stage(0)
  return cross_entropy(a, y) @stage(2)
}
train m { batch = 2 }
