#!/usr/bin/env python3
"""bf16_sums.py BEFORE.safetensors AFTER.safetensors: checks one SGD step (lr = 1) of
tests/e2e/bf16_sums.mpl against a float64 emulation of precision = bf16, where a sum of
products is rounded once: h = relu(bf16(xin) @ bf16(a)) rounded (w's gradient; at tp = 2
the rounded partial sums' sum, so only checked to be bf16 and within one bf16 step);
ab's gradient bf16(sum over the batch of bf16(xb^T @ bf16(wb))); xc's gradient
bf16(the transposed convolution of bf16(wc) by bf16(k)); bd's gradient, a bias's, the f32
sum over rows of the product bf16(bf16(wd) @ bf16(ad)^T), not rounded. Exit 1 on a mismatch.
Standard library only."""
import os, struct, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stcompare import load  # noqa: E402  (name -> (shape, values) of an F32 safetensors file)


def bf(x):
    """x (a float) rounded to bf16, to nearest, ties to even, through its f32 bits."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", u))[0]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main():
    before, after = load(sys.argv[1]), load(sys.argv[2])
    P = {k: v[1] for k, v in before.items()}
    grad = {k: [p - q for p, q in zip(before[k][1], after[k][1])] for k in before}  # lr = 1
    bad = 0

    def check(name, got, want, ulps_ok):
        nonlocal bad
        worst = 0.0
        for g, w in zip(got, want):
            step = abs(w) * 2.0 ** -7 if w else 1e-30  # one bf16 step near w (8 bits of mantissa)
            err = abs(g - w) / step
            worst = max(worst, err)
        ok = worst <= ulps_ok
        print("%s %s: worst %.4f bf16 steps from the emulation (at most %g)" % ("ok  " if ok else "FAIL", name, worst, ulps_ok))
        bad += not ok

    # h: w starts at 0, so its gradient h is exact in the update; it must be bf16 itself
    xin, a = [bf(v) for v in P["xin"]], [bf(v) for v in P["a"]]
    want = [bf(max(0.0, bf(sum(xin[i * 64 + k] * a[k * 8 + j] for k in range(64))))) for i in range(4) for j in range(8)]
    got = grad["w"]
    exact = all(bf(g) == g for g in got)
    print("%s h is bf16 (%d of %d elements)" % ("ok  " if exact else "FAIL", sum(bf(g) == g for g in got), len(got)))
    bad += not exact
    check("h", got, want, 1.0)
    # ab: sum over the batch n of bf16(xb[n]^T-contracted products), rounded once
    xb, wb = [bf(v) for v in P["xb"]], [bf(v) for v in P["wb"]]
    da = []
    for c in range(2):
        for k in range(16):
            for j in range(8):
                s = 0.0
                for n in range(4):
                    s += bf(sum(xb[((n * 2 + c) * 8 + i) * 16 + k] * wb[((n * 2 + c) * 8 + i) * 8 + j] for i in range(8)))
                da.append(bf(s))
    check("ab's gradient", grad["ab"], da, 0.02)  # the update a - da rounds in f32: far below one bf16 step
    # xc: dx[c, y, x] = sum over o, p, q of g[o, y - p, x - q] * k[o, c, p, q] (stride 1, no padding)
    kk, g = [bf(v) for v in P["k"]], [bf(v) for v in P["wc"]]
    dx = []
    for c in range(2):
        for y in range(6):
            for x in range(6):
                s = 0.0
                for o in range(3):
                    for p in range(3):
                        for q in range(3):
                            if 0 <= y - p < 4 and 0 <= x - q < 4:
                                s += g[(o * 4 + y - p) * 4 + x - q] * kk[((o * 2 + c) * 3 + p) * 3 + q]
                dx.append(bf(s))
    check("xc's gradient", grad["xc"], dx, 0.02)
    # bd: a bias's gradient sums the product's rounded input gradient over the rows in f32
    wd, ad = [bf(v) for v in P["wd"]], [bf(v) for v in P["ad"]]
    db = [f32(sum(bf(sum(wd[i * 8 + j] * ad[k * 8 + j] for j in range(8))) for i in range(4))) for k in range(16)]
    check("bd's gradient (a bias's: not rounded)", grad["bd"], db, 0.02)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
