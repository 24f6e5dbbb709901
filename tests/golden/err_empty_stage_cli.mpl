# args: --emit=graph --mesh pp=3
# --mesh pp=3 on the command line makes a stage the program gives no work: the error
# says so, notes the mesh's pp it replaces, and the @stage that gives the highest
# stage its work.
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  h = relu(x) @stage(0)
  return cross_entropy(h, y) @stage(1)
}
