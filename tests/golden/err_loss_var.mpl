# A model that returns a value that is not a scalar loss: the error is at the return,
# with a note where the value was made (for a stdlib call's result, at the call).
import nn
model m(x: f32[B, 8], y: i32[B]) {
  logits = nn.linear(x, 4)
  return logits
}
