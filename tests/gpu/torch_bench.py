#!/usr/bin/env python3
"""
torch_bench.py — the bench GPT (tests/bench/torch_gpt.py's model, the same as
tests/bench/gpt.mpl) trained with PyTorch on the GPU, for tests/gpu/run.sh.

  python3 torch_bench.py --d 384 --layers 6 --heads 6 --T 256 --B 8 [--tf32] [--steps 10]

Prints one JSON line: {"ms_per_step": median ms, "tok_s": tokens per second, "loss": ...}.
TF32 is off unless --tf32 (torch's matmul and cuDNN switches), like mplrun's --tf32.
"""
import argparse, json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import torch  # noqa: E402
import torch_gpt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    for k, v in (("d", 384), ("layers", 6), ("heads", 6), ("T", 256), ("B", 8), ("steps", 10), ("warmup", 3)):
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--tf32", action="store_true")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.set_default_device("cuda")
    torch.manual_seed(0)
    cfg = dict(vocab=256, ctx=a.T, d=a.d, heads=a.heads, layers=a.layers)
    P, fwd = torch_gpt.build(torch, "gpt", cfg)
    opt = torch_gpt.adamw(torch, P, 1e-3, (0.9, 0.999), 1e-8, 0.01)
    x = torch.randint(0, 256, (a.B, a.T))
    y = torch.randint(0, 256, (a.B, a.T))
    times = []
    for _ in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = fwd(x, y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    run = sorted(times[a.warmup:])
    ms = 1000 * run[len(run) // 2]
    print(json.dumps({"ms_per_step": ms, "tok_s": a.B * a.T / (ms / 1000), "loss": float(loss),
                      "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
