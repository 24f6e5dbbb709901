# args: --emit=ast
mesh(dp = 2, pp = 2, tp = 1)
model m(x: f32[B, 4, 8], y: i32[B]) {
  a, b = split(x[..., 1:5], 2, axis = -1); c = -a * 2 + b @ transpose(b, 1, 2)
  @recompute { d = sum(c, axis = (0 - 1)) } 
  for i in 0..2 @stage(i) { d = d + 1.5e-3 }
  if not true or false { d = d } else { d = where(d > 0, d, -inf) }
  return cross_entropy(d, y)
}
train m { schedule = 1f1b; optimizer = adamw(lr = 1e-3) }
