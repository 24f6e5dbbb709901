#!/usr/bin/env python3
"""half_scalars.py — a float64 emulation of tests/e2e/half_scalars.mpl (tests/e2e/bf16.sh).

  half_scalars.py init TYPE OUT.safetensors    the params (--init): c holds the TYPE
                                               rounding of 0.3 in two places, a, w, u drawn
  half_scalars.py check TYPE BEFORE AFTER      one SGD step at lr = 1 as PyTorch computes it

TYPE is bf16 or f16. PyTorch's rules for a Python number with a half tensor: arithmetic
takes it in f32 (a * 0.3 is round(a * f32(0.3)), each op's f32 result rounded once);
a comparison converts it to the tensor's type; mean sums in f32 and divides by n, its
gradient round(dy / n); a cast's gradient to the half type is rounded. The gradients are
BEFORE - AFTER (lr = 1): w's is z, u's the comparisons' 0, 1 or 2 plus full(0.1)'s
value rounded to the type, a's round(round(round(w) / 3) * 0.3). Each must be within 0.02
of a step of the type at its value (the f32 subtraction's error is far less); a constant
rounded to the type moves some elements a whole step, an unrounded full 0.1 or 0.25 of one. Exit 1 on a mismatch. Standard library only."""
import os, random, struct, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from v2_ref import load, save  # noqa: E402
from bf16_sums import bf as bf16, f32  # noqa: E402  (bf16 to nearest, ties to even; f32)


def f16(x):
    """x (exact in f32) rounded to f16, to nearest, ties to even (struct's 'e')."""
    return struct.unpack("<e", struct.pack("<e", x))[0]


def step_of(t, x, floor):
    """A step of type t's values near x, or near floor if x is smaller (8 bits of mantissa
    for bf16, 11 for f16)."""
    return max(abs(x), floor) * (2.0 ** -7 if t == "bf16" else 2.0 ** -10)


def main():
    if len(sys.argv) < 4 or sys.argv[2] not in ("bf16", "f16"):
        sys.exit(__doc__)
    t = sys.argv[2]
    r = bf16 if t == "bf16" else f16
    tie = r(f32(0.3))  # the type's 0.3: bf16 0.30078125 (above 0.3), f16 0.2998046875 (below)
    if sys.argv[1] == "init":
        g = random.Random(5)
        c = [tie, -tie, r(0.5), tie, r(0.25), r(-1.0), r(0.3125), r(0.2875),
             r(1.5), tie, r(0.1), r(-0.3), r(2.0), r(0.29), r(0.31), r(-0.5)]
        save(sys.argv[3], {"a": ([4, 6], [g.gauss(0, 1) for _ in range(24)]), "c": ([4, 4], c),
                           "w": ([4, 2], [g.gauss(0, 1) for _ in range(8)]),
                           "u": ([4, 4], [g.gauss(0, 1) for _ in range(16)])})
        return
    before, after = load(sys.argv[3]), load(sys.argv[4])
    P = {k: v[1] for k, v in before.items()}
    grad = {k: [p - q for p, q in zip(before[k][1], after[k][1])] for k in before}
    a, c, w = [r(v) for v in P["a"]], [r(v) for v in P["c"]], P["w"]
    h = [r(f32(r(f32(v * f32(0.3))) + f32(0.1))) for v in a]
    z = [r(f32(f32(f32(h[i * 6 + 3 * j] + h[i * 6 + 3 * j + 1]) + h[i * 6 + 3 * j + 2]) / 3.0))
         for i in range(4) for j in range(2)]
    k = [(1.0 if v > tie else 0.0) + (2.0 if v < tie else 0.0) + r(f32(0.1)) for v in c]
    dz = [r(v) for v in w]
    da = [r(f32(r(f32(dz[(n // 6) * 2 + (n % 6) // 3] / 3.0)) * f32(0.3))) for n in range(24)]
    bad = 0
    for name, want, floor in (("w", z, 2.0 ** -14), ("u", k, 2.0 ** -14), ("a", da, 2.0 ** -14)):
        worst = max(abs(gv - wv) / step_of(t, wv, floor) for gv, wv in zip(grad[name], want))
        ok = worst <= 0.02
        bad += not ok
        print("%s %s %s's gradient: worst %.4f steps of %s from the emulation (at most 0.02)"
              % ("ok  " if ok else "FAIL", t, name, worst, t))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
