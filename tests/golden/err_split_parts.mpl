# split makes 1 to 4096 parts: 4097 is refused as too many (8194 divides into 4097 parts:
# the message once said it did not), 0 as too few, and 5 parts of 8194 do not divide
model m(x: f32[B, 4], y: i32[B]) {
  a = split(cast(arange(8194), f32), 4097)
  b = split(cast(arange(8194), f32), 0)
  c = split(cast(arange(8194), f32), 5)
  return cross_entropy(x, y)
}
