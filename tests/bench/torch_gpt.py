"""
torch_gpt.py — the bench and parity models in PyTorch, written to match MPL's stdlib/nn.mpl:
GPT-2 names and [in, out] weight layout, pre-LayerNorm blocks (eps 1e-5), tanh GELU,
causal attention scaled by 1/sqrt(head size), a tied unembedding, mean cross-entropy,
and torch.optim.AdamW with weight decay on params of two or more dimensions only. The
Llama (model=llama) is an nn.Module as a PyTorch user writes one: RMSNorm, rotary
embeddings (rotate-half), grouped-query attention (torch 1.13 has no
scaled_dot_product_attention: the attention is written out, k and v repeated per query
head), SwiGLU, a tied output.

  python3 torch_gpt.py bench model=gpt|mlp|llama threads=N [d=384 layers=6 heads=6 T=256 B=8]
                            [kv_heads=2 hidden=1024]
                            [steps=5 warmup=1 budget=10]   (prints one JSON line: ms_per_step, blas)
  python3 torch_gpt.py parity OUTDIR      (writes init, tokens, expected params and loss)

It needs torch only; safetensors are written by hand (JSON header + raw little-endian f32).
"""
import json, math, os, struct, sys, time


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().float().cpu()
        data = t.numpy().astype('<f4').tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_tokens(path, toks):
    header = [0] * 256
    header[0], header[1], header[2] = 20240520, 1, len(toks)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack("<%dH" % len(toks), *toks))


def build(torch, kind, cfg):
    nn, F = torch.nn, torch.nn.functional
    P = {}

    def param(name, shape, init):
        t = torch.empty(*shape)
        if init == "normal":
            t.normal_(0.0, 0.02)
        elif init == "ones":
            t.fill_(1.0)
        else:
            t.zero_()
        P[name] = nn.Parameter(t)
        return P[name]

    if kind == "mlp":
        dims = [784, 1024, 1024, 10]
        for i in range(3):
            param("linear_%d.weight" % i, (dims[i], dims[i + 1]), "normal")
            param("linear_%d.bias" % i, (dims[i + 1],), "zeros")

        def fwd(x, y):
            h = x
            for i in range(3):
                h = h @ P["linear_%d.weight" % i] + P["linear_%d.bias" % i]
                if i < 2:
                    h = F.relu(h)
            return F.cross_entropy(h, y)
        return P, fwd

    V, C, d, H, L = cfg["vocab"], cfg["ctx"], cfg["d"], cfg["heads"], cfg["layers"]
    param("wte.weight", (V, d), "normal")
    param("wpe.weight", (C, d), "normal")
    for i in range(L):
        p = "h.%d." % i
        for ln in ("ln_1", "ln_2"):
            param(p + ln + ".weight", (d,), "ones")
            param(p + ln + ".bias", (d,), "zeros")
        for name, shape in (("attn.c_attn", (d, 3 * d)), ("attn.c_proj", (d, d)),
                            ("mlp.c_fc", (d, 4 * d)), ("mlp.c_proj", (4 * d, d))):
            param(p + name + ".weight", shape, "normal")
            param(p + name + ".bias", (shape[1],), "zeros")
    param("ln_f.weight", (d,), "ones")
    param("ln_f.bias", (d,), "zeros")

    def layernorm(x, name):
        return F.layer_norm(x, (x.shape[-1],), P[name + ".weight"], P[name + ".bias"], 1e-5)

    def linear(x, name):
        return x @ P[name + ".weight"] + P[name + ".bias"]

    def fwd(idx, targets):
        B, T = idx.shape
        x = F.embedding(idx, P["wte.weight"]) + F.embedding(torch.arange(T), P["wpe.weight"])
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for i in range(L):
            p = "h.%d." % i
            h = layernorm(x, p + "ln_1")
            q, k, v = linear(h, p + "attn.c_attn").split(d, dim=-1)
            hs = d // H
            q, k, v = (t.reshape(B, T, H, hs).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = torch.where(mask, att, torch.tensor(float("-inf")))
            y = F.softmax(att, dim=-1) @ v
            y = y.transpose(1, 2).reshape(B, T, d)
            x = x + linear(y, p + "attn.c_proj")
            h = layernorm(x, p + "ln_2")
            x = x + linear(F.gelu(linear(h, p + "mlp.c_fc"), approximate="tanh"), p + "mlp.c_proj")
        x = layernorm(x, "ln_f")
        logits = x @ P["wte.weight"].t()
        return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    return P, fwd


def llama_module(torch, cfg):
    """A Llama as an nn.Module (the layers of MPL's nn.llama_block; weights [in, out])."""
    nn, F = torch.nn, torch.nn.functional
    V, d, H, KV, L, hid = cfg["vocab"], cfg["d"], cfg["heads"], cfg["kv_heads"], cfg["layers"], cfg["hidden"]
    hs = d // H

    class RMSNorm(nn.Module):
        def __init__(self, n, eps=1e-6):
            super().__init__()
            self.weight, self.eps = nn.Parameter(torch.ones(n)), eps

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def lin(n, m):
        return nn.Linear(n, m, bias=False)

    def rope(x, cos, sin):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)
            self.wq, self.wk, self.wv, self.wo = lin(d, H * hs), lin(d, KV * hs), lin(d, KV * hs), lin(H * hs, d)
            self.w1, self.w3, self.w2 = lin(d, hid), lin(d, hid), lin(hid, d)

        def forward(self, x, cos, sin, mask):
            B, T, _ = x.shape
            h = self.attention_norm(x)
            q = self.wq(h).view(B, T, H, hs).transpose(1, 2)
            k = self.wk(h).view(B, T, KV, hs).transpose(1, 2)
            v = self.wv(h).view(B, T, KV, hs).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
            x = x + self.wo((att @ v).transpose(1, 2).reshape(B, T, d))
            h = self.ffn_norm(x)
            return x + self.w2(F.silu(self.w1(h)) * self.w3(h))

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(V, d)
            self.layers = nn.ModuleList([Block() for _ in range(L)])
            self.norm = RMSNorm(d)
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, 0.0, 0.02)

        def forward(self, idx, targets):
            B, T = idx.shape
            f = torch.exp(torch.arange(hs // 2, dtype=torch.float32) * (-2.0 * math.log(10000.0) / hs))
            a = torch.arange(T, dtype=torch.float32)[:, None] * f[None, :]
            cos, sin = torch.cos(a), torch.sin(a)
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            x = self.tok_embeddings(idx)
            for blk in self.layers:
                x = blk(x, cos, sin, mask)
            logits = self.norm(x) @ self.tok_embeddings.weight.t()
            return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))

    return Llama()


def adamw(torch, P, lr, betas, eps, wd):
    decay = [p for n, p in sorted(P.items()) if p.dim() >= 2]
    nodecay = [p for n, p in sorted(P.items()) if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": nodecay, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=eps)


def bench(args):
    import torch
    opts = dict(a.split("=") for a in args if "=" in a)
    threads = int(opts.get("threads", 1))
    torch.set_num_threads(threads)
    kind = opts.get("model", "gpt")
    cfg = dict(vocab=256, ctx=int(opts.get("T", 256)), d=int(opts.get("d", 384)), heads=int(opts.get("heads", 6)),
               layers=int(opts.get("layers", 6)), kv_heads=int(opts.get("kv_heads", 2)),
               hidden=int(opts.get("hidden", 1024)))
    B, T = int(opts.get("B", 8)), cfg["ctx"]
    torch.manual_seed(0)
    if kind == "llama":
        model = llama_module(torch, cfg)
        P, fwd = dict(model.named_parameters()), model
    else:
        P, fwd = build(torch, kind, cfg)
    opt = adamw(torch, P, 1e-3, (0.9, 0.999), 1e-8, 0.01)
    if kind == "mlp":
        B = int(opts.get("B", 256))
        x, y = torch.randn(B, 784), torch.randint(0, 10, (B,))
    else:
        x = torch.randint(0, 256, (B, T))
        y = torch.randint(0, 256, (B, T))
    # warm-up steps, then timed steps until `budget` seconds have gone (at least one, at
    # most `steps`); a warm-up step longer than the budget is itself the measurement (on a
    # reference BLAS a step can take a minute, and the first-step overheads are then noise)
    steps, warm, budget = int(opts.get("steps", 5)), int(opts.get("warmup", 1)), float(opts.get("budget", 10))
    # cores: the process's CPU time over the wall time of the timed steps (a BLAS with threads
    # of its own, OpenBLAS's pthreads build, uses them whatever torch.set_num_threads says)
    times, timed, cpu = [], [], []
    for s in range(warm + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = fwd(x, y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        if s >= warm or times[-1] > budget:
            timed.append(times[-1])
            cpu.append(time.process_time() - c0)
        if s < warm and times[-1] > budget:
            break
        if timed and sum(timed) > budget:
            break
    ms = 1000 * sorted(timed)[len(timed) // 2]
    print(json.dumps({"ms_per_step": ms, "steps_timed": len(timed), "loss": float(loss), "blas": blas_library(),
                      "cores": sum(cpu) / sum(timed)}))


def blas_library():
    """The BLAS this process loaded (resolved path), from /proc/self/maps; '?' if unknown."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() or "mkl" in line.lower()}
        libs = sorted(os.path.realpath(l) for l in libs if l.startswith("/"))
        return ",".join(libs) or "?"
    except OSError:
        return "?"


def parity(outdir):
    import torch
    torch.manual_seed(1234)
    cfg = dict(vocab=64, ctx=16, d=32, heads=4, layers=2)
    B, T, steps = 4, 16, 1
    P, fwd = build(torch, "gpt", cfg)
    # Every param random, not zeros and ones: a zero bias or a unit gain would hide a
    # forward that drops it. It also keeps the check well posed: the key part of each
    # c_attn.bias has a gradient that is zero in exact arithmetic (softmax ignores a shift
    # of a row's scores), so AdamW's first step turns rounding noise there into an update
    # of up to about lr; from a zero init that noise would be the tensor's whole size.
    with torch.no_grad():
        for name, p in sorted(P.items()):
            if p.dim() == 1:
                p.add_(torch.randn(p.shape) * 0.1)
    os.makedirs(outdir, exist_ok=True)
    write_safetensors(os.path.join(outdir, "init.safetensors"), P)
    g = torch.Generator().manual_seed(7)
    toks = torch.randint(0, cfg["vocab"], (4 * B * T + 1,), generator=g).tolist()
    write_tokens(os.path.join(outdir, "tokens.bin"), toks)
    opt = adamw(torch, P, 1e-3, (0.9, 0.95), 1e-8, 0.1)
    data = torch.tensor(toks[: B * T + 1])
    idx, tgt = data[:-1].reshape(B, T), data[1:].reshape(B, T)
    # two micro-batches of two rows each, each loss scaled by 1/2, as MPL's step does
    opt.zero_grad()
    total = 0.0
    for j in range(2):
        loss = fwd(idx[2 * j: 2 * j + 2], tgt[2 * j: 2 * j + 2])
        (loss / 2).backward()
        total += float(loss) / 2
    opt.step()
    write_safetensors(os.path.join(outdir, "expected.safetensors"), P)
    with open(os.path.join(outdir, "expected_loss.txt"), "w") as f:
        f.write("%.9g\n" % total)
    print("parity files written to", outdir, "loss", total)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "bench":
        bench(sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "parity":
        parity(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
