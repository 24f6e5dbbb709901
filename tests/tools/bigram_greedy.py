#!/usr/bin/env python3
"""bigram_greedy.py PARAMS.safetensors PROMPT N: the greedy text of tests/e2e/bigram_lm.mpl
(prompt bytes, then N tokens, then a newline, as mplrun --sample writes it), from its params
in float64: each next token is the argmax over j of sum_d wte[t, d] * head[d, j], t the last
token, ties to the lower id. Standard library only (stcompare.py's reader)."""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stcompare import load  # noqa: E402


def main():
    params, prompt, n = load(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
    (ws, wte), (hs, head) = params["wte.weight"], params["head"]
    V, D = ws
    assert hs == [D, V], hs
    toks = list(prompt)
    for _ in range(n):
        t = toks[-1]
        logits = [sum(wte[t * D + d] * head[d * V + j] for d in range(D)) for j in range(V)]
        toks.append(max(range(V), key=lambda j: (logits[j], -j)))
    sys.stdout.buffer.write(bytes(toks) + b"\n")


if __name__ == "__main__":
    main()
