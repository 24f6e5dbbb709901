# args: --emit=schedule
# The front end accepts bf16; the kernels do not lower it yet: one located
# diagnostic, not an abort.
model m(x: f32[B, 4], y: i32[B]) {
  h = cast(relu(cast(x, bf16)), f32)
  return cross_entropy(h, y)
}
train m { batch = 2 }
