#!/usr/bin/env python3
"""randprog.py SEED [OUT.mpl] — a random MPL program, for differential testing.

The program is a residual stream h: f32[B, T, D] that a random sequence of blocks
updates (h = h + f(h) or h = f(h)); each block draws from the language's ops (contract
v2: elementwise, reductions, shape ops, products, indexing, attention, the stdlib's
layers), so every value it makes reaches the loss and every param has a gradient. The
model ends in a projection to V classes and cross_entropy, plus the auxiliary losses
some blocks make. Placement (pp, @stage or @device or the balancer, interleaved(2) or zbv,
schedule, micro-batches, @recompute), precision and @shard on random params are drawn too;
a "# compare: MESH[/MICROBATCHES] ..." line names the meshes the program is also trained
at (params split: tp = 2; dp = 2 with half the micro-batches).

tests/e2e/random_programs.sh runs one training step of each program against the float64
reference evaluator (build/tests/test_refstep FILE), and the compare meshes, checkpoint
and resume and mpirun against the program's own run. The same SEED always gives the same
program.
"""
import random
import sys


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        r = self.r
        self.T = r.choice([3, 4, 5, 8])
        self.D = r.choice([4, 6, 8, 12])
        self.V = r.choice([5, 7, 11])
        self.lines = []
        self.nparam = 0
        self.ntmp = 0
        self.aux = []  # scalar terms added to the loss
        self.pp = r.choice([1, 1, 2, 2, 3])
        self.auto_stages = self.pp > 1 and r.random() < 0.3
        self.bf16 = r.random() < 0.2
        # compared with other meshes through mplc and mplrun (tests/e2e/random_programs.sh):
        # params split over tp = 2 at random (no-ops at tp = 1), and dp = 2. Not in bf16: a
        # row-parallel product rounds each rank's partial sum to bf16 (as Megatron does), so
        # tp = 2 is not tp = 1 to the rounding (measured: 1e-2 apart after 2 steps)
        self.shard = not self.bf16 and r.random() < 0.4
        self.dp = r.random() < 0.3
        self.defs = []
        self.consts = set()
        self.tied = r.random() < 0.25  # an embedding of y in front, its weight the head
        self.device = r.random() < 0.2  # @device(k), the same as @stage(k)
        self.interleave = self.pp > 1 and not self.auto_stages and r.random() < 0.25

    # ---- helpers ----------------------------------------------------------------
    def param(self, shape, init=None):
        self.nparam += 1
        name = "p%d" % self.nparam
        if init is None:
            init = self.r.choice(["normal(0.3)", "normal(0.5)", "uniform(-0.6, 0.6)"])
        ann = ""
        even = [i for i, d in enumerate(shape) if d % 2 == 0]
        if self.shard and even and self.r.random() < 0.5:
            ann = " @shard(%d)" % self.r.choice(even)
        self.emit("param %s: f32[%s] = %s%s" % (name, ", ".join(str(s) for s in shape), init, ann))
        return name

    def tmp(self):
        self.ntmp += 1
        return "t%d" % self.ntmp

    def emit(self, line):
        self.lines.append(line)

    def bind(self, expr):
        t = self.tmp()
        self.emit("%s = %s" % (t, expr))
        return t

    def unary(self, x):
        """An elementwise function of x, smooth enough for float64 vs float32 to agree."""
        fs = [
            lambda v: "tanh(%s)" % v, lambda v: "sigmoid(%s)" % v, lambda v: "gelu(%s)" % v,
            lambda v: "silu(%s)" % v, lambda v: "sin(%s)" % v, lambda v: "cos(%s)" % v,
            lambda v: "relu(%s)" % v, lambda v: "abs(%s)" % v, lambda v: "exp(tanh(%s))" % v,
            lambda v: "log(%s * %s + 0.5)" % (v, v), lambda v: "sqrt(%s * %s + 0.5)" % (v, v),
            lambda v: "rsqrt(%s * %s + 1.0)" % (v, v), lambda v: "pow(abs(%s) + 0.5, 1.5)" % v,
            lambda v: "-%s * 0.5" % v, lambda v: "%s / (%s * %s + 2.0)" % (v, v, v),
        ]
        return self.r.choice(fs)("(%s)" % x)

    # ---- blocks: each returns an expression of shape [B, T, D] ------------------
    def b_elementwise(self, h):
        r, D = self.r, self.D
        g = self.param([D]) if r.random() < 0.7 else self.param([1, D])
        a = self.bind(self.unary(h))
        op = r.choice(["*", "+", "-", "maximum", "minimum", "/"])
        if op in ("maximum", "minimum"):
            return "%s(%s, %s * %s)" % (op, a, h, g)
        if op == "/":
            return "%s / (%s * %s + 1.5)" % (a, g, g)
        return "%s %s %s" % (a, op, g)

    def b_mlp(self, h):
        r, D = self.r, self.D
        E = r.choice([D, 2 * D, 3])
        w1 = self.param([D, E])
        w2 = self.param([E, D])
        b = self.param([E], "zeros") if r.random() < 0.5 else None
        z = "%s @ %s" % (h, w1) + (" + %s" % b if b else "")
        a = self.bind(self.unary(z))
        return "%s @ %s" % (a, w2)

    def b_stdlib(self, h):
        r, D = self.r, self.D
        k = r.randrange(4)
        if k == 0:
            return "nn.layernorm(%s)" % h
        if k == 1:
            return "nn.rmsnorm(%s)" % h
        if k == 2:
            return "nn.linear(%s, %d)" % (h, D)
        if k == 3 and self.shard:
            return "nn.row_linear(tanh(nn.col_linear(%s, %d)), %d)" % (h, 2 * D, D)
        return "nn.swiglu(%s, %d)" % (h, r.choice([D, 2 * D]))

    def b_norm_by_hand(self, h):
        r = self.r
        k = r.randrange(4)
        if k == 0:
            return "%s - mean(%s, axis = -1, keepdims = true)" % (h, h)
        if k == 1:
            return "%s * amax(%s, axis = 1, keepdims = true)" % (h, h)
        if k == 2:
            return "%s * sum(%s * %s, axis = -1, keepdims = true) * 0.2" % (h, h, h)
        return "%s - amax(%s, axis = -1, keepdims = true)" % (h, h)

    def b_softmax(self, h):
        r, D = self.r, self.D
        s = self.param([D])
        ax = r.choice(["-1", "1"])
        f = r.choice(["softmax", "log_softmax"])
        v = "%s(%s * %s, axis = %s)" % (f, h, s, ax)
        return v if f == "softmax" else "%s * 0.3" % v

    def b_cumsum(self, h):
        ax = self.r.choice(["1", "-1", "2"])
        return "cumsum(%s, axis = %s) * 0.3" % (h, ax)

    def heads(self):
        """(H, Hkv, hs) with H * hs the attention width."""
        r = self.r
        hs = r.choice([2, 4])
        H = r.choice([1, 2, 4])
        Hkv = r.choice([x for x in (1, 2, 4) if H % x == 0])
        return H, Hkv, hs

    def b_sdpa(self, h):
        r, D, T = self.r, self.D, self.T
        H, Hkv, hs = self.heads()
        wq = self.param([D, H * hs])
        wk = self.param([D, Hkv * hs])
        wv = self.param([D, Hkv * hs])
        wo = self.param([H * hs, D])
        q = self.bind("transpose(reshape(%s @ %s, B, %d, %d, %d), 1, 2)" % (h, wq, T, H, hs))
        k = self.bind("transpose(reshape(%s @ %s, B, %d, %d, %d), 1, 2)" % (h, wk, T, Hkv, hs))
        v = self.bind("transpose(reshape(%s @ %s, B, %d, %d, %d), 1, 2)" % (h, wv, T, Hkv, hs))
        if r.random() < 0.3:
            q, k = "nn.rope(%s)" % q, "nn.rope(%s)" % k
        args = [q, k, v]
        if r.random() < 0.5:
            args.append("causal = true")
        if r.random() < 0.3:
            args.append("scale = %s" % r.choice(["0.25", "1.0", "0.7"]))
        y = self.bind("sdpa(%s)" % ", ".join(args))
        return "reshape(transpose(%s, 1, 2), B, %d, %d) @ %s" % (y, T, H * hs, wo)

    def b_attention_by_hand(self, h):
        r, D, T = self.r, self.D, self.T
        wq = self.param([D, D])
        wk = self.param([D, D])
        s = self.bind("(%s @ %s) @ transpose(%s @ %s, 1, 2) * %s" % (h, wq, h, wk, r.choice(["0.5", "0.3"])))
        if r.random() < 0.5:
            s = self.bind("where(causal_mask(%d), %s, full(-1e4, %d, %d))" % (T, s, T, T))
        a = self.bind("softmax(%s, axis = -1)" % s)
        return "%s @ %s" % (a, h)

    def b_stdlib_attention(self, h):
        r, D = self.r, self.D
        if r.random() < 0.5 and D % 2 == 0:
            heads = r.choice([x for x in (1, 2) if D % x == 0 and (D // x) % 2 == 0] or [1])
            return "nn.gqa_attention(%s, %d, %d)" % (h, heads, 1)
        heads = r.choice([x for x in (1, 2, 3, 4) if D % x == 0])
        return "nn.attention(%s, %d, causal = %s)" % (h, heads, r.choice(["true", "false"]))

    def b_shape(self, h):
        r, D, T = self.r, self.D, self.T
        k = r.randrange(9)
        if k == 0:  # split and concat in another order
            a, b = self.tmp(), self.tmp()
            self.emit("%s, %s = split(%s, 2, axis = -1)" % (a, b, h))
            return "concat(%s * 0.5, %s, axis = -1)" % (b, a)
        if k == 1:  # a product over T
            w = self.param([T, T])
            return "transpose(transpose(%s, 1, 2) @ %s, -1, -2)" % (h, w)
        if k == 2:  # flatten, project, unflatten
            w = self.param([T * D, T * D // 2 if (T * D) % 2 == 0 else T * D])
            n = T * D // 2 if (T * D) % 2 == 0 else T * D
            z = self.bind("reshape(%s, B, %d) @ %s" % (h, T * D, w))
            if n == T * D:
                return "reshape(%s, B, %d, %d)" % (z, T, D)
            return "repeat(reshape(%s, B, %d, %d), 2, axis = -1)" % (z, T, D // 2)
        if k == 3:  # slices scaled differently
            c = r.randrange(1, D)
            return "concat(%s[:, :, 0:%d] * 1.5, tanh(%s[:, :, %d:%d]), axis = -1)" % (h, c, h, c, D)
        if k == 4:  # stack, then reduce the new axis
            ax = r.choice(["1", "2", "3", "-1"])
            return "sum(stack(%s, %s * %s, tanh(%s), axis = %s), axis = %s) * 0.5" % (h, h, h, h, ax, ax)
        if k == 5:  # expand a reduced axis back
            return "expand(mean(%s, axis = 1, keepdims = true), -1, %d, -1) + %s" % (h, T, h)
        if k == 6:  # one position broadcast over all
            t = r.randrange(T)
            return "%s + %s[:, %d:%d, :]" % (h, h, t, t + 1)
        if k == 7:  # an int index drops the axis, stack puts it back
            rows = ", ".join("%s[:, %d, :] * %s" % (h, t, r.choice(["1.0", "0.5", "2.0"])) for t in reversed(range(T)))
            return "stack(%s, axis = 1)" % rows
        if k == 8:  # reshape into groups, reduce, repeat
            if D % 2:
                return "%s * 0.9" % h
            return "repeat(sum(reshape(%s, B, %d, %d, 2), axis = -1), 2, axis = -1)" % (h, T, D // 2)

    def b_indexing(self, h):
        r, D, T = self.r, self.D, self.T
        k = r.randrange(5)
        if k == 0:  # top-k values through a product
            kk = r.randrange(1, D + 1)
            w = self.param([kk, D])
            vals, idx = self.tmp(), self.tmp()
            self.emit("%s, %s = topk(%s, %d)" % (vals, idx, h, kk))
            return "%s @ %s" % (vals, w)
        if k == 1:  # gather with indices from topk of another value
            kk = r.randrange(1, D + 1)
            w = self.param([kk, D])
            vals, idx = self.tmp(), self.tmp()
            self.emit("%s, %s = topk(tanh(%s) * 0.5 + %s, %d, axis = -1)" % (vals, idx, h, self.param([D]), kk))
            return "gather(%s * 2.0, %s, -1) @ %s" % (h, idx, w)
        if k == 2:  # one_hot of an argmax selects the maximum
            return "%s * one_hot(argmax(%s, axis = -1), %d) + %s * 0.5" % (h, h, D, h)
        if k == 3:  # gather along T with indices from argmax over T
            am = self.bind("argmax(%s, axis = 1)" % h)  # [B, D]
            g = self.bind("gather(%s, reshape(%s, B, 1, %d), 1)" % (h, am, D))  # [B, 1, D]
            return "%s + %s" % (h, g)
        # floor and remainder
        return "%s %% 1.5 + floor(%s * 2.0) * 0.1" % (h, h)

    def b_embedding(self, h):
        return "%s + embedding(y, %d, %d)" % (h, self.V, self.D)

    def b_conv(self, h):
        r, D, T = self.r, self.D, self.T
        O = r.choice([1, 2])
        kh = r.choice([1, 2, 3])
        pad = r.choice([0, 1]) if kh == 3 else 0
        w = self.param([O, 1, kh, kh])
        c = self.bind("conv2d(reshape(%s, B, 1, %d, %d), %s, stride = 1, padding = %d)" % (h, T, D, w, pad))
        oh, ow = T + 2 * pad - kh + 1, D + 2 * pad - kh + 1
        z = self.bind("reshape(sum(%s, axis = 1), B, %d)" % (c, oh * ow))
        wp = self.param([oh * ow, T * D])
        return "reshape(%s @ %s, B, %d, %d)" % (z, wp, T, D)

    def b_moe(self, h):
        r, D = self.r, self.D
        E = r.choice([2, 4] if self.shard else [2, 3, 4])  # held whole, split with @shard(0)
        k = r.randrange(1, E + 1)
        y, aux = self.tmp(), self.tmp()
        self.emit("%s, %s = nn.moe(%s, %d, %d, %d)" % (y, aux, h, E, r.choice([D, 4]), k))
        self.aux.append("0.01 * %s" % aux)
        return "%s + %s" % (h, y)

    def b_dropout(self, h):
        return "dropout(%s, %s)" % (h, self.r.choice(["0.1", "0.25"]))

    def b_half(self, h):
        g = self.param([self.D])
        t = self.r.choice(["bf16", "f16"])
        return "cast(cast(%s, %s) * cast(%s, %s), f32)" % (h, t, g, t)

    def b_aux(self, h):
        self.aux.append(self.bind("%s * mean(%s * %s)" % (self.r.choice(["0.1", "0.05"]), h, h)))
        return None

    def b_def_loop(self, h):
        """A def of this program's own, with a param, an optional one (absent: the identity
        of its op) and an nn.linear inside, called in an unrolled loop as L[i]."""
        r, D = self.r, self.D
        k = len(self.defs)
        n = r.randrange(1, 4)
        opt = r.randrange(n + 1)  # instances i >= opt have the optional gain
        act = self.unary("x @ w")
        self.defs.append("""def layer%d(x: f32[..., d], i: int) -> f32[..., d] {
  param w: f32[d, d] = normal(0.3)
  param g: f32[d] = normal(1.0) if i >= %d
  return nn.linear(%s * g, d) * 0.5
}""" % (k, opt, act))
        self.emit("for i in 0..%d {" % n)
        self.emit("  %s = %s + layer%d(%s, i) as L%d[i]" % (h, h, k, h, k))
        self.emit("}")
        return None

    def b_language(self, h):
        """The language around the ops: positional embeddings of arange, compile-time if
        and consts, defs returning two values, fused column-parallel q|k|v split in
        three, linears without bias, full, stack of a split's tuple."""
        r, D, T = self.r, self.D, self.T
        k = r.randrange(7)
        if k == 0:
            return "embedding(arange(%d), %d, %d) * 10.0" % (T, T, D)
        if k == 1:
            c = r.choice([4, 8])
            self.consts.add("const big%d = %d" % (c, c))
            t = self.tmp()
            self.emit("if %d > big%d {" % (D, c))
            self.emit("  %s = tanh(%s) * 2.0" % (t, h))
            self.emit("} else {")
            self.emit("  %s = sigmoid(%s) - 0.5" % (t, h))
            self.emit("}")
            return t
        if k == 2:
            n = len(self.defs)
            self.defs.append("""def pair%d(x: f32[..., d]) {
  param a: f32[d] = normal(1.0)
  return x * a, x - a
}""" % n)
            u, v = self.tmp(), self.tmp()
            self.emit("%s, %s = pair%d(%s) as pr%d" % (u, v, n, h, n))
            return "%s * sigmoid(%s)" % (u, v)
        if k == 3:
            q, kk, v = self.tmp(), self.tmp(), self.tmp()
            self.emit("%s, %s, %s = split(nn.col_linear(%s, %d, groups = 3), 3, axis = -1)" % (q, kk, v, h, 3 * D))
            return "(%s * sigmoid(%s) + %s) * 10.0" % (q, kk, v)
        if k == 4:
            return "nn.linear(%s, %d, use_bias = false) * 5.0" % (h, D)
        if k == 5:
            return "%s * full(0.5, %d, 1)" % (h, T)
        n = r.choice([d for d in (1, 2, T) if T % d == 0])
        return "reshape(stack(split(%s, %d, axis = 1), axis = 1), B, %d, %d) * 0.5" % (h, n, T, D)

    BLOCKS = [
        (b_elementwise, 5), (b_mlp, 4), (b_stdlib, 3), (b_norm_by_hand, 2), (b_softmax, 2),
        (b_cumsum, 1), (b_sdpa, 3), (b_attention_by_hand, 2), (b_stdlib_attention, 2),
        (b_shape, 4), (b_indexing, 3), (b_embedding, 1), (b_conv, 1), (b_moe, 1),
        (b_dropout, 1), (b_half, 1), (b_aux, 1), (b_def_loop, 2), (b_language, 3),
    ]

    def block(self, h):
        fs = [f for f, w in self.BLOCKS for _ in range(w)]
        f = self.r.choice(fs)
        e = f(self, h)
        if e is None:
            return h
        # the stdlib's layers start from small weights (0.02): residual, so h stays O(1)
        residual = f in (Gen.b_stdlib, Gen.b_stdlib_attention, Gen.b_language) or self.r.random() < 0.6
        return self.bind(("%s + %s" % (h, e)) if residual else e)

    def program(self, seed):
        r, T, D, V = self.r, self.T, self.D, self.V
        nblocks = r.randrange(2, 7)
        x = self.param([D]) if r.random() < 0.3 else None
        h = "x" if x is None else self.bind("x * %s" % x)
        if self.tied:
            h = self.bind("%s + embedding(y, %d, %d) as emb" % (h, V, D))
        h = self.bind("%s * 1.0" % h) if h == "x" else h  # loops rebind h: never the input
        # stages: monotone, every stage gets at least one block
        nst = self.pp * (2 if self.interleave else 1)  # interleaved(2): 2 chunks per rank
        if self.pp > 1 and not self.auto_stages:
            nblocks = max(nblocks, nst)
            cuts = sorted(r.sample(range(1, nblocks), nst - 1))
        else:
            cuts = []
        recompute_at = r.randrange(nblocks) if r.random() < 0.25 else -1
        for i in range(nblocks):
            stage = sum(1 for c in cuts if c <= i)
            start = len(self.lines)
            h = self.block(h)
            blk = self.lines[start:]
            del self.lines[start:]
            ann = []
            if self.pp > 1 and not self.auto_stages:
                ann.append("@%s(%d)" % ("device" if self.device else "stage", stage))
            if i == recompute_at:
                ann.append("@recompute")
            if ann and blk:
                self.lines.append(" ".join(ann) + " {")
                self.lines += ["  " + l for l in blk]
                self.lines.append("}")
            else:
                self.lines += blk
        if self.tied:  # the embedding's weight, [V, D], is the head too (on the last stage)
            self.emit("logits = %s @ transpose(emb.weight, 0, 1)" % h)
        else:
            wo = self.param([D, V])
            self.emit("logits = %s @ %s" % (h, wo))
        loss = "cross_entropy(logits, y)"
        for a in self.aux:
            loss += " + " + a
        self.emit("return " + loss)

        mb = r.choice([1, 2]) if self.pp > 1 else r.choice([1, 1, 2])
        if self.dp:  # dp = 2 with half the micro-batches: the same rows in each micro-batch
            mb = r.choice([2, 4])
        batch = mb * r.choice([1, 2])
        sched = r.choice(["gpipe", "1f1b", "sequential", "zb"]) if self.pp > 1 else None
        if self.interleave:  # two chunks a rank: interleaved(2), or zbv's V (drawn apart from r,
            # so that every other seed's program stays as it was)
            sched = "zbv" if random.Random(seed * 7919 + 1).random() < 0.5 else "interleaved(2)"
        out = ["# randprog.py %d: T %d, D %d, V %d, pp %d%s" % (seed, T, D, V, self.pp,
                                                                ", auto stages" if self.auto_stages else "")]
        compare = (["pp=%d,tp=2" % self.pp] if self.shard else []) + (["pp=%d,dp=2/%d" % (self.pp, mb // 2)] if self.dp else [])
        if compare:
            out.append("# compare: " + " ".join(compare))
        out += ["import nn", ""] + sorted(self.consts) + self.defs
        if self.pp > 1:
            out.append("mesh(pp = %d)" % self.pp)
        out.append("model m(x: f32[B, %d, %d], y: i32[B, %d]) {" % (T, D, T))
        out += ["  " + l for l in self.lines]
        out.append("}")
        out.append("train m {")
        out.append("  batch = %d" % batch)
        out.append("  seq = %d" % T)
        out.append("  microbatches = %d" % mb)
        if sched:
            out.append("  schedule = %s" % sched)
        if self.bf16:
            out.append("  precision = bf16")
        # plain SGD: AdamW's first step is lr * sign(g), which rounding noise can flip; and a
        # small lr, since a loss of 25 and lr 0.1 made step 2 amplify step 1's 1e-7 by 2000
        if compare:
            out.append("  optimizer = sgd(lr = 0.02%s)" % (", momentum = 0.9" if r.random() < 0.3 else ""))
            if r.random() < 0.3:
                out.append("  grad_clip = %s" % r.choice(["0.5", "1.0"]))
            if self.dp and r.random() < 0.5:
                out.append("  zero = 1")
        out.append("  seed = %d" % (seed % 1000))
        out.append("}")
        return "\n".join(out) + "\n"


def main():
    seed = int(sys.argv[1])
    text = Gen(seed).program(seed)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
