# args: --emit=graph -D d=0
# -D d=0 makes wte's weight [16, 0]: one error at its declaration; the later use of
# wte.weight once added a false "instance 'wte' has no param 'weight'"
const d = 8
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 16, d) as wte
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets)
}
train m { seq = 4 }
