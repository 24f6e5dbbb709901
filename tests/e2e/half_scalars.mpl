# A half program's constants as PyTorch takes a Python number with a bf16 tensor (pass 106):
# arithmetic computes with it in f32, unrounded (a * 0.3 is round(a * 0.3f), not
# round(a * round(0.3))); a comparison converts it to the tensor's type (c > 0.3 compares
# with bf16(0.3) = 0.30078125). The backward's constants the same: mean's gradient over 3
# is round(dy / 3), not round(dy * bf16(1/3)). A bf16 tensor made by full holds its value
# rounded (torch.full(..., dtype = torch.bfloat16)). tests/tools/half_scalars.py writes the init
# (c holds the type's rounding of 0.3 exactly) and checks one SGD step at lr = 1 against a
# float64 emulation (tests/e2e/bf16.sh; half_scalars_f16 is this file with f16 for bf16).
model m(x: f32[B, 8], y: i32[B]) {
  param a: bf16[4, 6] = normal(1.0)
  param c: bf16[4, 4] = normal(1.0)
  param w: f32[4, 2] = normal(1.0)
  param u: f32[4, 4] = normal(1.0)
  h = a * 0.3 + 0.1
  z = mean(reshape(h, 4, 2, 3), axis = -1)
  k = cast(c > 0.3, f32) + 2.0 * cast(c < 0.3, f32)
  f = cast(full(0.1, 4, 4, dtype = bf16), f32)
  return sum(w * cast(z, f32)) + sum(u * (k + f)) + sum(cast(c, f32)) * 0.0 + mean(x) * 0.0 + mean(cast(y, f32)) * 0.0
}

train m {
  data = synthetic(4)
  batch = 4
  optimizer = sgd(lr = 1.0)
  steps = 1
}
