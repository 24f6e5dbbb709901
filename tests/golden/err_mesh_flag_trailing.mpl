# args: --mesh pp=2, --emit=plan
# --mesh ending in a comma: exit 2, as any bad --mesh (an empty --mesh is refused the same).
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m {
  batch = 4
}
