#!/usr/bin/env python3
"""v2_ref.py — float64 references for nn.rope and nn.moe (tests/e2e/ops_v2.sh).

  v2_ref.py init-moe OUT.safetensors       params for tests/e2e/v2/moe_ref.mpl (--init)
  v2_ref.py check-rope BEFORE AFTER        AFTER's W is -rope(BEFORE's X, base 100)
  v2_ref.py check-moe BEFORE AFTER         AFTER's W is -y and c is -aux of moe(BEFORE's X)

BEFORE and AFTER are --save files before and after one SGD step at lr = 1 of the models
tests/e2e/v2/rope_ref.mpl and moe_ref.mpl. Prints the worst relative error (max |a-b| /
max |b|) and exits 1 above 1e-5. Standard library only.
"""
import json, math, random, struct, sys


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name != "__metadata__":
            a, b = t["data_offsets"]
            out[name] = (t["shape"], list(struct.unpack("<%df" % ((b - a) // 4), data[a:b])))
    return out


def save(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (shape, vals) in sorted(tensors.items()):
        blob = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def rel_err(got, want):
    scale = max(abs(w) for w in want) or 1.0
    return max(abs(g - w) for g, w in zip(got, want)) / scale


def rope(x, shape, base):
    T, hs = shape[-2], shape[-1]
    half, y = hs // 2, list(x)
    for row in range(len(x) // hs):
        t = row % T
        for i in range(half):
            a = t * base ** (-2.0 * i / hs)
            x1, x2 = x[row * hs + i], x[row * hs + half + i]
            y[row * hs + i] = x1 * math.cos(a) - x2 * math.sin(a)
            y[row * hs + half + i] = x2 * math.cos(a) + x1 * math.sin(a)
    return y


MOE = {"E": 4, "H": 6, "K": 2, "d": 8, "N": 6}


def init_moe(path):
    rnd = random.Random(13)
    E, H, d, N = MOE["E"], MOE["H"], MOE["d"], MOE["N"]
    g = lambda n, s: [rnd.gauss(0, s) for _ in range(n)]
    save(path, {"X": ([2, 3, d], g(N * d, 1.0)), "W": ([2, 3, d], [0.0] * N * d), "c": ([1], [0.0]),
                "moe.router": ([d, E], g(d * E, 0.5)), "moe.w1": ([E, d, H], g(E * d * H, 0.3)),
                "moe.w3": ([E, d, H], g(E * d * H, 0.3)), "moe.w2": ([E, H, d], g(E * H * d, 0.3))})


def moe(p):
    E, H, K, d, N = MOE["E"], MOE["H"], MOE["K"], MOE["d"], MOE["N"]
    x, r = p["X"][1], p["moe.router"][1]
    w1, w3, w2 = p["moe.w1"][1], p["moe.w3"][1], p["moe.w2"][1]
    y, count, psum = [0.0] * (N * d), [0] * E, [0.0] * E
    for n in range(N):
        xn = x[n * d:(n + 1) * d]
        logit = [sum(xn[i] * r[i * E + e] for i in range(d)) for e in range(E)]
        m = max(logit)
        z = sum(math.exp(l - m) for l in logit)
        prob = [math.exp(l - m) / z for l in logit]
        chosen = sorted(range(E), key=lambda e: (-prob[e], e))[:K]
        total = sum(prob[e] for e in chosen)
        for e in range(E):
            psum[e] += prob[e] / N
        for e in chosen:
            count[e] += 1
            a = [sum(xn[i] * w1[(e * d + i) * H + j] for i in range(d)) for j in range(H)]
            b = [sum(xn[i] * w3[(e * d + i) * H + j] for i in range(d)) for j in range(H)]
            h = [a[j] / (1 + math.exp(-a[j])) * b[j] for j in range(H)]
            for o in range(d):
                y[n * d + o] += prob[e] / total * sum(h[j] * w2[(e * H + j) * d + o] for j in range(H))
    aux = E * sum(count[e] / (N * K) * psum[e] for e in range(E))
    return y, aux


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    if sys.argv[1] == "init-moe":
        init_moe(sys.argv[2])
        return 0
    before, after = load(sys.argv[2]), load(sys.argv[3])
    if sys.argv[1] == "check-rope":
        shape, x = before["X"]
        errs = [rel_err([-w for w in after["W"][1]], rope(x, shape, 100.0))]
    elif sys.argv[1] == "check-moe":
        y, aux = moe(before)
        errs = [rel_err([-w for w in after["W"][1]], y), rel_err([-after["c"][1][0]], [aux])]
    else:
        sys.exit(__doc__)
    worst = max(errs)
    print("max rel err %.3g" % worst)
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
