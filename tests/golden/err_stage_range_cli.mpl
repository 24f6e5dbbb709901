# args: --mesh pp=1 --emit=graph
# An @stage past the stages of a --mesh that replaces the program's pp: the note points at
# the mesh's pp, as for an empty stage (pass 69: --mesh pp=1 over pp = 2 said nothing).
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 4] = normal(0.1)
  param v: f32[4, 4] = normal(0.1)
  h = relu(x @ w)
  o = h @ v @stage(1)
  return cross_entropy(o, y)
}
train m {
  data = synthetic(64)
  batch = 4
  steps = 1
}
