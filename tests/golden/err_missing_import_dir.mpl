# args: -I tests/golden/no_such_folder -I tests/golden
# A module that is not found, with an -I that is no folder (a typo, otherwise silent): named in a note.
import nosuchmodule
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(nosuchmodule.f(x), y)
}
