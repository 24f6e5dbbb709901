# args: --emit=graph -D lr=1
# An int given with -D for a float const is that float: k = lr / 2 is 0.5 (the full()
# below), not the integer division 1 / 2 = 0 (pass 52).
const lr = 0.25
const k = lr / 2
model m(x: f32[B, 4]) {
  return mean(x) * cast(k, f32)
}
