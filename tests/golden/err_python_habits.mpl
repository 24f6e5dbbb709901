# Python (PyTorch) habits, each a syntax error with a hint of the language's form (pass 71:
# "unexpected '*', expecting expression" alone): **, //, +=, a typed-less def with ':',
# range(), if ...:, elif, from ... import, import ... as.
const a = 2 ** 3
const b = 7 // 2
def f(x):
  return x
model m(x: f32[B, 4], y: i32[B]) {
  y2 = x
  y2 += x
  for i in range(3) {
    y2 = y2
  }
  if true:
    y2 = y2
  if true {
    y2 = y2
  } elif false {
    y2 = y2
  }
  return mean(y2)
}
from nn import linear
import nn as F
