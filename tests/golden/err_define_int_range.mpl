# args: --emit=graph -D d=9223372036854775808
# an int -D past the 64-bit range says so (it said "not an int, a float or a bool")
const d = 8
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 16, d) as wte
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets)
}
train m { seq = 4 }
