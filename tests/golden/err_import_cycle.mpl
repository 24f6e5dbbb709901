# args: --emit=graph -I tests/golden/mods
# Two modules that import each other: cyc_b reads cyc_a's const while cyc_a is still being
# loaded (its import of cyc_b comes first); the message says so instead of "has no const".
import cyc_a
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(cyc_a.fa(x), y)
}
