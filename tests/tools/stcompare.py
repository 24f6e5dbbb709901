#!/usr/bin/env python3
"""stcompare.py A.safetensors B.safetensors [REL_TOL [FLOOR]]: compares two F32 safetensors
files tensor by tensor (same names and shapes); prints the worst relative error of each
tensor (max |a-b| / max |b|) and exits 1 if any exceeds REL_TOL (default 1e-4). With FLOOR,
the divisor is at least FLOOR times the largest |b| of any tensor: a tensor that holds only
rounding noise (a zero-initialised bias whose gradient is zero in exact arithmetic) is
measured against the file's values, not against itself. Standard library only."""
import json, math, struct, sys


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            sys.exit("%s: %s is %s, not F32" % (path, name, t["dtype"]))
        a, b = t["data_offsets"]
        out[name] = (t["shape"], struct.unpack("<%df" % ((b - a) // 4), data[a:b]))
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if sorted(a) != sorted(b):
        print("tensor names differ: only in A %s, only in B %s" % (sorted(set(a) - set(b)), sorted(set(b) - set(a))))
        return 1
    floor = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    floor *= max((abs(x) for _, vb in b.values() for x in vb), default=0.0)
    bad = 0
    for name in sorted(a):
        (sa, va), (sb, vb) = a[name], b[name]
        if sa != sb:
            print("FAIL %s: shape %s vs %s" % (name, sa, sb))
            bad += 1
            continue
        scale = max(max((abs(x) for x in vb), default=0.0), floor) or 1.0
        diff = 0.0
        for x, y in zip(va, vb):
            d = abs(x - y)
            if not d <= diff:  # max() would skip a NaN: it is the worst error there is
                diff = d if d == d else math.inf
        worst = diff / scale
        ok = worst <= tol
        bad += not ok
        print("%s %s: max rel err %.3g" % ("ok  " if ok else "FAIL", name, worst))
    print("%d tensors, %d over %g" % (len(a), bad, tol))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
