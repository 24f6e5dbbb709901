#!/usr/bin/env python3
"""bcast_models.py OUTDIR — writes one MPL program per broadcast batched-matmul pattern.

Each program multiplies two params (3-D to 6-D, broadcast on either side, with and without
transposed operands) and returns mean(p * p * w) + mean(x), where w is a param of the
product's shape, so the loss, a's and b's gradients and w's gradient (p * p: every output
position) all show a wrong batch offset. tests/e2e/matmul_bcast.sh checks them against the
float64 reference evaluator; tests/gpu/prepare.sh carries them to the GPU check.
"""
import os
import sys

# (name, a's shape, b's shape, transpose a, transpose b), shapes as the product sees them
CASES = [
    ("issue_4d", [2, 2, 4, 3], [2, 1, 3, 4], False, False),
    ("lhs_bcast_4d", [2, 1, 4, 3], [2, 2, 3, 4], False, False),
    ("lead1_rhs", [2, 3, 4, 5], [1, 3, 5, 2], False, False),
    ("lead1_lhs", [1, 3, 4, 5], [2, 3, 5, 2], False, False),
    ("rank_mix_rhs3", [3, 1, 4, 5], [2, 5, 6], False, False),
    ("rank_mix_lhs3", [2, 5, 6], [3, 1, 6, 4], False, False),
    ("gqa_5d", [2, 3, 2, 4, 5], [2, 3, 1, 5, 3], False, False),
    ("gqa_5d_both", [2, 1, 2, 4, 5], [2, 3, 1, 5, 3], False, False),
    ("six_d", [2, 2, 2, 2, 3, 4], [2, 1, 2, 1, 4, 3], False, False),
    ("six_d_lhs1", [1, 2, 1, 2, 3, 4], [2, 1, 2, 1, 4, 3], False, False),
    ("three_d_rhs1", [4, 3, 5], [1, 5, 2], False, False),
    ("three_d_lhs1", [1, 3, 5], [4, 5, 2], False, False),
    ("rhs_2d", [2, 3, 4, 5], [5, 2], False, False),
    ("lhs_2d", [4, 5], [2, 3, 5, 2], False, False),
    ("outer_batch", [3, 1, 4, 5], [1, 2, 5, 6], False, False),
    ("ta_4d", [2, 2, 4, 3], [2, 1, 3, 4], True, False),
    ("tb_4d", [2, 2, 4, 3], [2, 1, 3, 4], False, True),
    ("tt_5d", [2, 3, 2, 4, 5], [2, 3, 1, 5, 3], True, True),
    ("ta_gqa_lhs_bcast", [2, 1, 2, 4, 5], [2, 3, 1, 5, 3], True, False),
    ("mid_bcast_5d", [2, 3, 1, 4, 5], [1, 1, 2, 5, 3], False, False),
    ("five_vs_4", [3, 2, 1, 4, 2], [2, 1, 2, 3], False, True),
    ("six_d_tt", [2, 1, 3, 1, 2, 3], [1, 2, 1, 2, 3, 4], True, True),
    ("vector_rhs_batch", [2, 3, 4, 5], [2, 1, 5, 1], False, False),
]


def bcast(a, b):
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        assert x == y or x == 1 or y == 1, (a, b)
        out.append(max(x, y))
    return out


def stored(shape, t):
    return shape[:-2] + [shape[-1], shape[-2]] if t else shape


def program(a, b, ta, tb):
    out = bcast(a[:-2], b[:-2]) + [a[-2], b[-1]]
    dims = lambda s: ", ".join(map(str, s))
    ea = "transpose(a, -1, -2)" if ta else "a"
    eb = "transpose(b, -1, -2)" if tb else "b"
    return f"""# a broadcast batched matmul: {a} @ {b} (ta={ta}, tb={tb}) -> {out}
model mm(x: f32[B, 2]) {{
  param a: f32[{dims(stored(a, ta))}] = normal(1.0)
  param b: f32[{dims(stored(b, tb))}] = normal(1.0)
  param w: f32[{dims(out)}] = normal(1.0)
  p = {ea} @ {eb}
  return mean(p * p * w) + mean(x)
}}

train mm {{
  data = synthetic(8)
  batch = 4
  optimizer = sgd(lr = 0.1)
  steps = 3
}}
"""


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, a, b, ta, tb in CASES:
        with open(os.path.join(out, f"bcast_{name}.mpl"), "w") as f:
            f.write(program(a, b, ta, tb))
    print(len(CASES))


if __name__ == "__main__":
    main()
