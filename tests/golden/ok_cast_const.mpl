# args: --emit=graph
# A cast of a compile-time number to a float type rounds as the run-time cast of its f32
# value does (pass 52: left unrounded): bf16 keeps 8 significant bits (1.001 -> 1, so a
# is 1000), f16 11 (65519 -> 65504) and overflows past 65504 (70000 -> inf, so c is 0).
const a = cast(1.001, bf16) * 1000
const b = cast(65519, f16)
const c = 1.0 / cast(70000, f16)
model m(x: f32[B, 4]) {
  return mean(x) * a + mean(x) * b + mean(x) * c
}
