#!/usr/bin/env python3
"""losscompare.py A.jsonl B.jsonl [REL_TOL]: compares the per-step losses of two --metrics
files (JSON lines with "step" and "loss"): every step of A must be in B with
|loss_a - loss_b| / |loss_b| <= REL_TOL (default 1e-5). B may hold more steps (an
uninterrupted run against a resumed one). Prints the worst step and exits 1 if a step
is missing, A is empty, or an error exceeds REL_TOL. Standard library only."""
import json, math, sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[int(row["step"])] = float(row["loss"])
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-5
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if not a:
        print("FAIL %s has no steps" % sys.argv[1])
        return 1
    missing = sorted(set(a) - set(b))
    if missing:
        print("FAIL steps %s are not in %s" % (missing, sys.argv[2]))
        return 1
    worst, at = -1.0, None
    for step in sorted(a):
        err = abs(a[step] - b[step]) / (abs(b[step]) or 1.0)
        if not err <= worst:  # a NaN loss is the worst error there is
            worst, at = (err if err == err else math.inf), step
    ok = worst <= tol
    print("%s steps %d-%d: max rel loss err %.2g (step %d: %.8g vs %.8g), tol %g" %
          ("ok  " if ok else "FAIL", min(a), max(a), worst, at, a[at], b[at], tol))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
