# No train block: every key takes its default (batch 8, seq 64, adamw, ...).
model m(x: f32[B, T], y: i32[B]) {
  param w: f32[64, 2] = zeros
  return cross_entropy(x @ w, y)
}
