#!/usr/bin/env python3
"""
compare.py — params after training on the GPU against the CPU's (both .safetensors, F32).

  python3 compare.py REF.safetensors GPU.safetensors [TOL]

For each tensor: max |gpu - ref| / max |ref| (the error relative to the tensor's scale).
Prints the worst tensor and exits 0 when every tensor is below TOL (default 1e-4), 1 when
one is not or the files disagree about names and shapes, 2 on a bad file.
Only the Python standard library: it runs on any GPU machine.
"""
import json, math, struct, sys
from array import array


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise ValueError("%s: %s is %s, not F32" % (path, name, t["dtype"]))
        b, e = t["data_offsets"]
        a = array("f")
        a.frombytes(data[base + b: base + e])
        if sys.byteorder != "little":
            a.byteswap()
        out[name] = (tuple(t["shape"]), a)
    return out


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__)
        return 2
    tol = float(sys.argv[3]) if len(sys.argv) == 4 else 1e-4
    try:
        ref, got = read_st(sys.argv[1]), read_st(sys.argv[2])
    except (OSError, ValueError, KeyError) as e:
        print("compare: %s" % e)
        return 2
    if sorted(ref) != sorted(got):
        print("compare: the files hold different tensors: %s" % sorted(set(ref) ^ set(got))[:5])
        return 1
    worst, worst_name = 0.0, ""
    for name in sorted(ref):
        (rs, ra), (gs, ga) = ref[name], got[name]
        if rs != gs:
            print("compare: %s has shape %s on the CPU, %s on the GPU" % (name, rs, gs))
            return 1
        scale = max((abs(x) for x in ra), default=0.0)
        diff = 0.0
        for x, y in zip(ra, ga):
            d = abs(x - y)
            if not d <= diff:  # also catches NaN
                diff = d if d == d else math.inf
        rel = diff / scale if scale > 0 else diff
        if not rel <= worst:
            worst, worst_name = (rel if rel == rel else math.inf), name
    print("max relative error %.3g (%s), tolerance %.1g, %d tensors" % (worst, worst_name or "-", tol, len(ref)))
    return 0 if worst < tol else 1


if __name__ == "__main__":
    sys.exit(main())
