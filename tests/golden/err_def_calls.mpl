# A recursion that calls itself twice fans out to 2^k calls: depth 60 stays under the
# depth limit (64), and the calls ran mplc out of memory (14 GB) before the 20M-statement
# limit; now a limit on def calls stops it at once.
def f(k: int) -> int {
  if k == 0 { return 1 }
  return f(k - 1) + f(k - 1)
}
model m(x: f32[B, 8], y: i32[B]) {
  return cross_entropy(x * f(60), y)
}
