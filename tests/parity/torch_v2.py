"""
torch_v2.py — float64 PyTorch twins of the v2 parity models (tests/parity/v2/*.mpl), written
as a PyTorch user writes them and mirroring stdlib/nn.mpl: MPL's [in, out] weight layout and
param names, RMSNorm x * rsqrt(mean(x^2) + eps) * w, rotate-half rope with
f_i = base^(-2i/hs), SwiGLU w2(silu(w1 x) * w3 x), causal GQA attention (k and v repeated
per query head with repeat_interleave), top-k routing with gates renormalised over the k,
the Switch load-balancing loss E * sum_e f_e * P_e, LayerNorm eps 1e-5, tanh GELU, and
torch.optim.AdamW with weight decay on params of two or more dimensions only.

  /usr/bin/python3 tests/parity/torch_v2.py [MODEL...]      (llama moe cnn vit; default all)

For each model it compiles the program with build/mplc ($BUILD), takes MPL's initial params
(mplrun JOB --steps 0 --save), doubles every param of two or more dimensions, moves every
param of one dimension (norm gains, biases) and every all-zero param (the class token) by
0.5 * N(0, 1), and writes tests/parity/v2/MODEL.init.safetensors. (At normal(0.02) a d = 16
MLP's pre-activations are about 0.1, where tanh and erf GELU differ by 3e-8: no check could
tell them apart; a unit gain or a zero bias would hide a forward that drops it.) It reads
the data MPL's loader reads (the token file tests/parity/v2/tokens.bin, written here once;
or synthetic(n) drawn from the seed by mplrng.py), trains 3 AdamW steps of 2 micro-batches
in float64, and writes MODEL.expected.safetensors (f32) and MODEL.expected_loss.txt (the 3
step losses: the mean of the micro-batches' losses, before each update, as MPL reports
them). For the MoE it prints the closest routing call (the smallest gap between a token's
k-th and (k+1)-th router probability over all steps): float32 noise must stay far below it.

Run once with torch; the stored files are committed and run_v2.sh needs no torch.
WRONG=rope_sign|no_renorm|no_aux|gelu_erf|adam_l2 (environment) builds a deliberately wrong
twin (rope rotating the other way; gates not renormalised over the k; the aux loss left out;
erf GELU; Adam with L2 decay instead of AdamW), for showing that run_v2.sh's check fails:
  WRONG=rope_sign OUTDIR=/tmp/w /usr/bin/python3 tests/parity/torch_v2.py llama
  EXPECTED=/tmp/w tests/parity/run_v2.sh llama
(written to $OUTDIR, never over the stored files).
"""
import json, math, os, random, struct, subprocess, sys, tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mplrng  # noqa: E402  (MPL's counter RNG and synthetic(n) draw)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
V2 = os.path.join(ROOT, "tests", "parity", "v2")
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
WRONG = os.environ.get("WRONG", "")
DT = torch.float64
STEPS, MICRO = 3, 2
GAIN, SPREAD = 2.0, 0.5   # the weights' factor and the 1-D params' move (see above)

# ---- files ---------------------------------------------------------------------------


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (path, name)
        b, e = info["data_offsets"]
        vals = struct.unpack("<%df" % ((e - b) // 4), blob[8 + n + b:8 + n + e])
        out[name] = torch.tensor(vals, dtype=DT).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        data = struct.pack("<%df" % t.numel(), *t.flatten().tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_tokens(path, toks):
    header = [0] * 256
    header[0], header[1], header[2] = 20240520, 1, len(toks)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack("<%dH" % len(toks), *toks))


def read_tokens(path):
    with open(path, "rb") as f:
        blob = f.read()
    magic, version, count = struct.unpack("<3i", blob[:12])
    assert magic == 20240520 and version == 1
    return list(struct.unpack("<%dH" % count, blob[1024:1024 + 2 * count]))


# ---- layers (stdlib/nn.mpl) ----------------------------------------------------------


class Linear(nn.Module):
    """nn.linear: x @ weight + bias, weight [in, out] (MPL's layout, not nn.Linear's)."""

    def __init__(self, n, out, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, out, dtype=DT))
        self.bias = nn.Parameter(torch.empty(out, dtype=DT)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class RMSNorm(nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(n, dtype=DT))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, base=10000.0):
    """Rotary embedding of [..., T, hs], rotate-half form (Hugging Face's Llama)."""
    T, hs = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, hs, 2, dtype=DT) / hs)
    angle = torch.arange(T, dtype=DT)[:, None] * inv_freq[None, :]
    cos, sin = angle.cos(), angle.sin()
    if WRONG == "rope_sign":
        sin = -sin
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class GQAttention(nn.Module):
    """nn.gqa_attention: causal, rope on q and k, kv heads shared by heads/kv_heads queries."""

    def __init__(self, d, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.hs = heads, kv_heads, d // heads
        self.wq = Linear(d, d, bias=False)
        self.wk = Linear(d, kv_heads * self.hs, bias=False)
        self.wv = Linear(d, kv_heads * self.hs, bias=False)
        self.wo = Linear(d, d, bias=False)

    def forward(self, x):
        B, T, d = x.shape
        q = self.wq(x).view(B, T, self.heads, self.hs).transpose(1, 2)
        k = self.wk(x).view(B, T, self.kv_heads, self.hs).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv_heads, self.hs).transpose(1, 2)
        q, k = rope(q), rope(k)
        g = self.heads // self.kv_heads
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        return self.wo(y)


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.w1 = Linear(d, hidden, bias=False)
        self.w3 = Linear(d, hidden, bias=False)
        self.w2 = Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaBlock(nn.Module):
    def __init__(self, d, heads, kv_heads, hidden, eps):
        super().__init__()
        self.attention_norm = RMSNorm(d, eps)
        self.attention = GQAttention(d, heads, kv_heads)
        self.ffn_norm = RMSNorm(d, eps)
        self.feed_forward = SwiGLU(d, hidden)

    def forward(self, x):
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class MoE(nn.Module):
    """nn.moe: SwiGLU experts computed densely, top-k routing, gates renormalised over the
    k; returns (y, aux) with aux the Switch Transformer load-balancing loss."""

    def __init__(self, d, experts, hidden, top_k):
        super().__init__()
        self.experts, self.top_k = experts, top_k
        self.router = nn.Parameter(torch.empty(d, experts, dtype=DT))
        self.w1 = nn.Parameter(torch.empty(experts, d, hidden, dtype=DT))
        self.w3 = nn.Parameter(torch.empty(experts, d, hidden, dtype=DT))
        self.w2 = nn.Parameter(torch.empty(experts, hidden, d, dtype=DT))
        self.min_gap = float("inf")   # the closest call between the k-th and the next expert

    def forward(self, x):
        B, T, d = x.shape
        xf = x.reshape(B * T, d)
        probs = F.softmax(xf @ self.router, dim=-1)
        top, idx = probs.topk(self.top_k, dim=-1)
        srt = probs.detach().sort(dim=-1, descending=True).values
        self.min_gap = min(self.min_gap, float((srt[:, self.top_k - 1] - srt[:, self.top_k]).min()))
        gates = top if WRONG == "no_renorm" else top / top.sum(dim=-1, keepdim=True)
        y = torch.zeros_like(xf)
        for e in range(self.experts):
            gate = (gates * (idx == e)).sum(dim=-1, keepdim=True)   # 0 for a token that did not pick e
            y = y + gate * ((F.silu(xf @ self.w1[e]) * (xf @ self.w3[e])) @ self.w2[e])
        fraction = F.one_hot(idx, self.experts).sum(dim=1).to(DT).mean(dim=0) / self.top_k
        aux = self.experts * (fraction * probs.mean(dim=0)).sum()
        return y.reshape(B, T, d), aux


class Attention(nn.Module):
    """nn.attention with a fused q|k|v projection (c_attn) and c_proj."""

    def __init__(self, d, heads, causal=True):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.c_attn = Linear(d, 3 * d)
        self.c_proj = Linear(d, d)

    def forward(self, x):
        B, T, d = x.shape
        hs = d // self.heads
        q, k, v = (t.reshape(B, T, self.heads, hs).transpose(1, 2) for t in self.c_attn(x).split(d, dim=-1))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        if self.causal:
            att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, d)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.c_fc = Linear(d, 4 * d)
        self.c_proj = Linear(4 * d, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="none" if WRONG == "gelu_erf" else "tanh"))


def layernorm(n):
    return nn.LayerNorm(n, eps=1e-5, dtype=DT)


# ---- the models (tests/parity/v2/*.mpl) ----------------------------------------------


class Llama(nn.Module):
    def __init__(self, vocab=64, d=32, layers=2, heads=4, kv_heads=2, hidden=48, eps=1e-5):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, d, dtype=DT)
        self.layers = nn.ModuleList(LlamaBlock(d, heads, kv_heads, hidden, eps) for _ in range(layers))
        self.norm = RMSNorm(d, eps)

    def forward(self, idx, targets):
        x = self.tok_embeddings(idx)
        for layer in self.layers:
            x = layer(x)
        logits = self.norm(x) @ self.tok_embeddings.weight.t()   # tied output
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class MoELM(nn.Module):
    def __init__(self, vocab=64, d=16, layers=2, heads=4, kv_heads=2, experts=4, hidden=24, top_k=2,
                 aux_weight=0.1):
        super().__init__()
        self.aux_weight = aux_weight
        self.tok_embeddings = nn.Embedding(vocab, d, dtype=DT)
        self.attention_norm = nn.ModuleList(RMSNorm(d) for _ in range(layers))
        self.attention = nn.ModuleList(GQAttention(d, heads, kv_heads) for _ in range(layers))
        self.ffn_norm = nn.ModuleList(RMSNorm(d) for _ in range(layers))
        self.feed_forward = nn.ModuleList(MoE(d, experts, hidden, top_k) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.output = Linear(d, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.tok_embeddings(idx)
        aux = 0.0
        for i in range(len(self.attention)):
            x = x + self.attention[i](self.attention_norm[i](x))
            y, a = self.feed_forward[i](self.ffn_norm[i](x))
            x = x + y
            aux = aux + a
        logits = self.output(self.norm(x))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return loss if WRONG == "no_aux" else loss + self.aux_weight * aux


class CNN(nn.Module):
    def __init__(self, channels=3, c1=8, c2=16, classes=10):
        super().__init__()
        self.conv1 = nn.Parameter(torch.empty(c1, channels, 3, 3, dtype=DT))
        self.bias1 = nn.Parameter(torch.empty(c1, dtype=DT))
        self.conv2 = nn.Parameter(torch.empty(c2, c1, 3, 3, dtype=DT))
        self.bias2 = nn.Parameter(torch.empty(c2, dtype=DT))
        self.head = Linear(c2, classes)

    def forward(self, x, y):
        h = F.relu(F.conv2d(x, self.conv1, self.bias1, padding=1))
        h = F.relu(F.conv2d(h, self.conv2, self.bias2, stride=2, padding=1))
        return F.cross_entropy(self.head(h.mean(dim=(2, 3))), y)


class ViTBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln_1, self.attn = layernorm(d), Attention(d, heads, causal=False)
        self.ln_2, self.mlp = layernorm(d), MLP(d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    def __init__(self, image=8, patch=4, channels=3, classes=10, d=16, layers=2, heads=4):
        super().__init__()
        n = (image // patch) ** 2
        self.patch = patch
        self.patch_embed = nn.Parameter(torch.empty(d, channels, patch, patch, dtype=DT))
        self.cls_token = nn.Parameter(torch.empty(1, 1, d, dtype=DT))
        self.pos_embed = nn.Parameter(torch.empty(1, n + 1, d, dtype=DT))
        self.blocks = nn.ModuleList(ViTBlock(d, heads) for _ in range(layers))
        self.norm = layernorm(d)
        self.head = Linear(d, classes)

    def forward(self, x, y):
        p = F.conv2d(x, self.patch_embed, stride=self.patch).flatten(2).transpose(1, 2)   # [B, n, d]
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), p], dim=1) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return F.cross_entropy(self.head(self.norm(h[:, 0])), y)


# ---- data: what MPL's loader feeds step s, micro-batch j -------------------------------

BATCH = 4


def token_batches(path, seq):
    """llm.c's loader: step s reads batch*seq + 1 tokens from s*batch*seq (no wrap in 3 steps);
    idx the first batch*seq, targets shifted by one, [batch, seq]; micro-batch j the j-th rows."""
    toks = read_tokens(path)
    n = BATCH * seq
    assert STEPS * n + 1 <= len(toks)
    out = []
    for s in range(STEPS):
        buf = torch.tensor(toks[s * n: s * n + n + 1])
        idx, tgt = buf[:-1].reshape(BATCH, seq), buf[1:].reshape(BATCH, seq)
        r = BATCH // MICRO
        out.append([(idx[j * r:(j + 1) * r], tgt[j * r:(j + 1) * r]) for j in range(MICRO)])
    return out


def image_batches(seed, n, shape, classes):
    """synthetic(n): input 0 (the images) standard normal f32, input 1 (the labels) in
    [0, classes); step s reads examples (s*batch + k) % n."""
    per = 1
    for s in shape:
        per *= s
    xs = torch.tensor(mplrng.synth(seed, 0, n * per, "f32"), dtype=DT).reshape(n, *shape)
    ys = torch.tensor(mplrng.synth(seed, 1, n, "i32", classes), dtype=torch.long)
    out = []
    for s in range(STEPS):
        rows = [(s * BATCH + k) % n for k in range(BATCH)]
        r = BATCH // MICRO
        out.append([(xs[rows[j * r:(j + 1) * r]], ys[rows[j * r:(j + 1) * r]]) for j in range(MICRO)])
    return out


# ---- the runs --------------------------------------------------------------------------

MODELS = {
    # name: (module, its data (synthetic: the train block's seed and n), seed of the init's perturbation)
    "llama": (Llama, lambda: token_batches(os.path.join(V2, "tokens.bin"), 16), 101),
    "moe": (MoELM, lambda: token_batches(os.path.join(V2, "tokens.bin"), 16), 102),
    "cnn": (CNN, lambda: image_batches(13, 16, (3, 8, 8), 10), 103),
    "vit": (ViT, lambda: image_batches(14, 16, (3, 8, 8), 10), 104),
}


def mpl_init(name, tmp):
    """MPL's initial params of the program (mplrun --steps 0 --save)."""
    job, out = os.path.join(tmp, name + ".job"), os.path.join(tmp, name + ".init.safetensors")
    subprocess.run([os.path.join(BUILD, "mplc"), os.path.join(V2, name + ".mpl"), "-I", "stdlib", "-o", job],
                   cwd=ROOT, check=True)
    subprocess.run([os.path.join(BUILD, "mplrun"), job, "--steps", "0", "--save", out, "-q"], cwd=ROOT, check=True)
    return read_safetensors(out)


def perturbed(params, seed):
    """Every param of two or more dimensions times GAIN; then every 1-D param and every
    all-zero param moved by SPREAD * N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(params):
        p = params[name]
        if p.dim() >= 2:
            p = p * GAIN
        if p.dim() == 1 or not p.any():
            p = p + SPREAD * torch.randn(p.shape, generator=g, dtype=DT)
        out[name] = p
    return out


def adamw(model):
    decay = [p for _, p in sorted(model.named_parameters()) if p.dim() >= 2]
    nodecay = [p for _, p in sorted(model.named_parameters()) if p.dim() < 2]
    opt = torch.optim.Adam if WRONG == "adam_l2" else torch.optim.AdamW   # L2 in the gradient, not decoupled
    return opt([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
               lr=1e-3, betas=(0.9, 0.95), eps=1e-8)


def train(name, outdir, init_path):
    cls, data, _ = MODELS[name]
    model = cls()
    init = read_safetensors(init_path)
    model.load_state_dict(init, strict=True)
    opt = adamw(model)
    losses = []
    for batches in data():
        opt.zero_grad()
        total = 0.0
        for inputs in batches:
            loss = model(*inputs)
            (loss / MICRO).backward()   # each micro-batch's backward starts from 1/microbatches
            total += float(loss) / MICRO
        opt.step()
        losses.append(total)
    params = dict(model.state_dict())
    write_safetensors(os.path.join(outdir, name + ".expected.safetensors"), params)
    with open(os.path.join(outdir, name + ".expected_loss.txt"), "w") as f:
        f.write("".join("%.9g\n" % l for l in losses))
    gaps = [m.min_gap for m in model.modules() if isinstance(m, MoE)]
    print("%s: losses %s%s" % (name, " ".join("%.6f" % l for l in losses),
                               "; closest routing call %.2e" % min(gaps) if gaps else ""))


def main():
    names = sys.argv[1:] or list(MODELS)
    outdir = os.environ.get("OUTDIR", V2)
    if WRONG and os.path.abspath(outdir) == os.path.abspath(V2):
        raise SystemExit("WRONG=%s: set OUTDIR to a scratch folder" % WRONG)
    tokens = os.path.join(V2, "tokens.bin")
    if not os.path.exists(tokens):
        rng = random.Random(20240520)
        write_tokens(tokens, [rng.randrange(64) for _ in range(4 * BATCH * 16 + 1)])
    torch.manual_seed(0)
    os.makedirs(outdir, exist_ok=True)
    for name in names:
        init_path = os.path.join(V2, name + ".init.safetensors")
        if not WRONG:
            with tempfile.TemporaryDirectory() as tmp:
                write_safetensors(init_path, perturbed(mpl_init(name, tmp), MODELS[name][2]))
        train(name, outdir, init_path)


if __name__ == "__main__":
    main()
