# A module that is not on the stdlib or -I path.
import nosuchmodule
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(nosuchmodule.f(x), y)
}
