# repeat, expand and stack as the front end lowers them (issue 13): repeat is reshape ->
# expand -> reshape (just an expand for a size-1 axis), stack a reshape per input and
# a concat; an int index is a slice and a reshape that drops the axis.
model m(x: f32[B, 3, 4], y: i32[B]) {
  r = repeat(x, 2, axis = 1)                 # [B, 6, 4]
  r1 = repeat(x[:, :, 0:1], 3, -1)           # [B, 3, 3]
  e = expand(x[:, 0:1, :], B, 5, 4)          # [B, 5, 4]
  e1 = expand(x[0, 0, :], 2, 4)              # [2, 4]: a new leading axis
  s = stack(x[:, 0, :], x[:, 1, :], axis = -1)   # [B, 4, 2]
  z = sum(r, axis = 1) + sum(e, axis = 1) + sum(s, axis = -1) + sum(r1) + sum(e1, axis = 0)
  return cross_entropy(z, y)
}
train m { batch = 2 }
