# args: --emit=graph --schedule interleaved(64)
# --schedule interleaved(64) on the command line, the most chunks a rank takes there as in
# the train key (pass 119: a mutant refused the flag's 64; ok_interleaved_max has the key's)
mesh(pp = 2)
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m { batch = 2 }
