# mesh axes are named: mesh(2) once meant dp = 2 (pass 52), where pp was as likely meant.
mesh(2)
model m(x: f32[B, 4]) {
  return mean(x)
}
