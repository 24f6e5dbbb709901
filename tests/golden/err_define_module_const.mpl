# args: --emit=graph -I tests/golden/mods -D hidden=16
# -D names a const of an imported module, not the main program's: the message says whose
# it is and that -D replaces only the main program's consts.
import widths
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(widths.widen(x), y)
}
