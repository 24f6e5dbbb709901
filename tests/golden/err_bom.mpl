# A UTF-8 byte order mark before the first line is skipped (pass 52: "non-ASCII
# character outside a comment or string", showing an invisible character). The
# error below is located as without the mark.
model m(x: f32[B, 8]) {
  return mean(y)
}
