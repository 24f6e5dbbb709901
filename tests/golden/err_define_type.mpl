# args: --emit=graph -D n=8.0 -D flag=1 -D lr=1
# -D keeps a const's own type (pass 52): an int for a float const is that float (lr / 2
# stays 0.5; it was an integer division, 0), a float for an int const and an int for a
# bool const are refused at the const.
const lr = 1.0
const k = lr / 2
const n = 4
const flag = true
model m(x: f32[B, 4]) {
  return mean(x) * cast(k, f32) * cast(n, f32)
}
