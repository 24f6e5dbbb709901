# Shape and type rules at their edges, one error each (pass 109: each was accepted, or
# refused with another message, by a mutant that passed every suite); an empty slice names
# its bounds as written, transpose with one axis is an error, a 0-d tensor takes axis 0 or -1
model m(x: f32[B, 4], y: i32[B]) {
  a = reshape(x, -2, 2)
  yi = cast(x, i32)
  b = yi @ cast(reshape(x, 4, B), i32)
  t4 = y[0:4]
  c = cross_entropy(x, t4)
  d = x[:, 0:0]
  e = yi * 1.5
  g = x[:, 4]
  h = x[:, 5:10]
  u = transpose(x, 0)
  s0 = sum(x)
  p = softmax(s0, 1)
  q = cumsum(s0, -2)
  r = sum(s0, 1)
  return cross_entropy(x, y)
}
train m {
  batch = 8
}
