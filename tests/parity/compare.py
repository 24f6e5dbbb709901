"""
compare.py — compares MPL's params after one step with PyTorch's (standard library only).

  python3 compare.py GOT.safetensors EXPECTED.safetensors TOL [INIT.safetensors DTOL]

For every tensor of EXPECTED: GOT must hold it with the same shape, and its relative error
||got - expected||_2 / ||expected||_2 must be below TOL. Prints one line per tensor
("ok"/"FAIL"), then "N passed, N failed"; exits non-zero on any failure.
"""
import json, math, struct, sys
from array import array


def load(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit("%s: %s is %s, not F32" % (path, name, info["dtype"]))
        begin, end = info["data_offsets"]
        a = array("f")
        a.frombytes(blob[8 + n + begin:8 + n + end])
        if sys.byteorder != "little":
            a.byteswap()
        out[name] = (info["shape"], a)
    return out


def main():
    got, want, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
    # with INIT and DTOL: the step's change itself, ||(got - init) - (want - init)|| /
    # ||want - init|| below DTOL: the params' relative error mixes the update with the
    # params, and a missing term of the update (AdamW's decay, lr * wd = 1e-4 of each
    # weight) hid under a params tolerance of 1e-4 (pass 62)
    init = load(sys.argv[4]) if len(sys.argv) > 5 else None
    dtol = float(sys.argv[5]) if init else 0.0
    passed = failed = 0
    for name in sorted(want):
        shape, b = want[name]
        if name not in got or got[name][0] != shape:
            print("FAIL %s: %s" % (name, "missing" if name not in got else
                                    "shape %s, expected %s" % (got[name][0], shape)))
            failed += 1
            continue
        a = got[name][1]
        diff = math.sqrt(sum((x - y) * (x - y) for x, y in zip(a, b)))
        norm = math.sqrt(sum(y * y for y in b))
        rel = diff / norm if norm > 0 else diff
        big = max(abs(x - y) for x, y in zip(a, b))
        ok = rel < tol and all(math.isfinite(x) for x in a)
        extra = ""
        if init and name in init:
            c = init[name][1]
            dn = math.sqrt(sum((y - z) * (y - z) for y, z in zip(b, c)))
            dd = math.sqrt(sum((x - y) * (x - y) for x, y in zip(a, b)))
            if dn > 1e-6 * norm:  # a tensor the step moved (not one whose gradient is zero)
                drel = dd / dn
                ok = ok and drel < dtol
                extra = "  update rel %.2e" % drel
        print("%s %-28s rel %.2e  max abs %.2e%s" % ("ok  " if ok else "FAIL", name, rel, big, extra))
        passed, failed = passed + ok, failed + (not ok)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
