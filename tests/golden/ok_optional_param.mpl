# An absent optional param is the identity of its operation.
def affine(x: f32[..., n], scale: bool, shift: bool) {
  param g: f32[n] = ones if scale
  param b: f32[n] = zeros if shift
  return x * g + b
}

model m(x: f32[B, 4], y: i32[B]) {
  h = affine(x, false, false)
  h = affine(h, true, false) as scaled
  h = affine(h, false, true)
  return cross_entropy(h, y)
}

train m { batch = 2 }
