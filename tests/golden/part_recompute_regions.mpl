# args: --emit=partition
# Two @recompute statements are two regions: the second's op b is read by the backward
# (w2's gradient is b^T dh) and is remade from the first's output a, which is held as that
# region's checkpoint; a is not remade (pass 119: with every statement in one region, the
# product a was redone in the backward and not held).
model m(x: f32[B, 64], y: i32[B]) {
  param w1: f32[64, 64] = normal(0.1)
  param w2: f32[64, 8] = normal(0.1)
  a = x @ w1 @recompute
  b = a * 2.0 @recompute
  h = b @ w2
  return cross_entropy(tanh(h), y)
}
train m { batch = 32 }
