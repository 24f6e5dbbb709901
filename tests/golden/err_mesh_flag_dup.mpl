# args: --mesh pp=2,tp=1,pp=3 --emit=plan
# --mesh with an axis given twice: exit 2, as any bad --mesh.
model m(x: f32[B, 4], y: i32[B]) {
  param w: f32[4, 3] = normal(0.1)
  return cross_entropy(x @ w, y)
}
train m { batch = 4; steps = 1 }
