# Mixing element types is an error; cast converts.
model m(x: f32[B, 4], idx: i32[B, 4], y: i32[B]) {
  h = x + idx
  k = x @ cast(idx, bf16)
  ok = x + cast(idx, f32)
  return cross_entropy(ok, y)
}
