#!/usr/bin/env python3
"""
torch_bench.py — the bench GPT (tests/bench/gpt.mpl: GPT-2's blocks, tied unembedding, AdamW)
trained with PyTorch on the GPU, written as PyTorch users write it: an nn.Module,
F.scaled_dot_product_attention, the fused AdamW, torch.autocast, torch.compile. For
tests/gpu/run.sh.

  python3 torch_bench.py --d 384 --layers 6 --heads 6 --T 256 --B 8 [--vocab 256]
                         [--mode fp32|tf32|bf16|bf16-compile] [--steps 10] [--warmup 3]

  fp32          float32, no TF32 (torch.backends' matmul and cuDNN switches off)
  tf32          float32 with TF32 products (--tf32 is the same)
  bf16          torch.autocast(dtype=torch.bfloat16), eager
  bf16-compile  the same under torch.compile

Prints one JSON line: {"ms_per_step": median ms after the warm-up, "tok_s": tokens per second,
"loss", "max_memory_allocated": bytes (torch.cuda.max_memory_allocated over the whole run:
params, gradients and AdamW state included), "mode", "params", "device"}.
"""
import argparse, json, math, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """nn.block of stdlib/nn.mpl: pre-layernorm attention and MLP (GELU, tanh form)."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, d, heads, layers):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():  # the MPL model's inits: normal(0.02), zero biases
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied unembedding
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    for k, v in (("vocab", 256), ("d", 384), ("layers", 6), ("heads", 6), ("T", 256), ("B", 8), ("steps", 10),
                 ("warmup", 3)):
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--mode", choices=("fp32", "tf32", "bf16", "bf16-compile"), default="fp32")
    ap.add_argument("--tf32", action="store_true", help="the same as --mode tf32")
    a = ap.parse_args()
    mode = "tf32" if a.tf32 else a.mode
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    torch.manual_seed(0)
    dev = "cuda"
    model = GPT(a.vocab, a.T, a.d, a.heads, a.layers).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]  # as MPL: weight decay on matrices only
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8, fused=True)
    step_model = torch.compile(model) if mode == "bf16-compile" else model
    autocast = mode.startswith("bf16")
    x = torch.randint(0, a.vocab, (a.B, a.T), device=dev)
    y = torch.randint(0, a.vocab, (a.B, a.T), device=dev)
    times = []
    for _ in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = step_model(x, y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    run = sorted(times[a.warmup:])
    ms = 1000 * run[len(run) // 2]
    out = {"ms_per_step": ms, "tok_s": a.B * a.T / (ms / 1000), "loss": float(loss), "mode": mode,
           "max_memory_allocated": torch.cuda.max_memory_allocated(), "params": nparams,
           "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if not math.isfinite(out["loss"]):
        raise SystemExit("torch_bench: the loss is not finite: %s" % out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
