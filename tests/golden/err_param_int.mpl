# args: --emit=graph
# A param is trained by its gradient: an integer one is refused when compiled (mplrun said
# only "only f32 params are supported").
model m(x: f32[B, 4], y: i32[B]) {
  param w: i32[4] = zeros
  param b: bool[4] = zeros
  return cross_entropy(x + cast(w, f32), y)
}
