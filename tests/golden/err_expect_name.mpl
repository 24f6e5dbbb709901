# Where only a name may come, the message says so (pass 52: "expecting expression",
# which an integer is).
import 3
model m(x: f32[B, 4]) {
  y = x.3
  z = exp(x) as 7
  return mean(x)
}
