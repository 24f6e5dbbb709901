# Several syntax errors reported in one run.
const a = 3 +
model m(x: f32[B, 4], y: i32[B]) {
  h = x @@ x
  k = (x + 
  return cross_entropy(h, y)
}
train m { batch = = 4 }
