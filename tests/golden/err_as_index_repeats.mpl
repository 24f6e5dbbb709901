# as h[i] inside a second loop: each run of the inner loop gets the same name; the note
# shows a unique index instead of 'as h.0[i]', which does not parse.
import nn
model m(x: f32[B, 4], y: i32[B]) {
  for i in 0..2 {
    for j in 0..2 {
      x = nn.linear(x, 4) as h[i]
    }
  }
  return cross_entropy(x, y)
}
