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
at (params split: tp = 2; dp = 2 with half the micro-batches). Seeds from 10000 (NEW_SEEDS)
also draw the blocks of NEW_BLOCKS, from a stream of their own: reductions broadcast back
onto square shapes along every axis, i32 arithmetic, comparisons and masks, softmax and
norms along other axes, and sdpa, conv2d, product and half-precision variants.

tests/e2e/random_programs.sh runs one training step of each program against the float64
reference evaluator (build/tests/test_refstep FILE), and the compare meshes, checkpoint
and resume and mpirun against the program's own run. The same SEED always gives the same
program.
"""
import random
import sys


NEW_SEEDS = 10000


class Gen:
    def __init__(self, seed=0):
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
        # seeds >= NEW_SEEDS also draw the blocks of NEW_BLOCKS (reductions broadcast back onto
        # square shapes along every axis, i32 arithmetic and comparisons, softmax and norms
        # along other axes, sdpa and conv2d variants, ...) from a stream of their own, q, so
        # that every program of a seed below it stays byte for byte what it was
        self.new = seed >= NEW_SEEDS
        self.q = random.Random(seed * 104729 + 11)

    # ---- helpers ----------------------------------------------------------------
    def param(self, shape, init=None, r=None):
        r = r or self.r
        self.nparam += 1
        name = "p%d" % self.nparam
        if init is None:
            init = r.choice(["normal(0.3)", "normal(0.5)", "uniform(-0.6, 0.6)"])
        ann = ""
        even = [i for i, d in enumerate(shape) if d % 2 == 0]
        if self.shard and even and r.random() < 0.5:
            ann = " @shard(%d)" % r.choice(even)
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

    def unary(self, x, r=None):
        """An elementwise function of x, smooth enough for float64 vs float32 to agree."""
        fs = [
            lambda v: "tanh(%s)" % v, lambda v: "sigmoid(%s)" % v, lambda v: "gelu(%s)" % v,
            lambda v: "silu(%s)" % v, lambda v: "sin(%s)" % v, lambda v: "cos(%s)" % v,
            lambda v: "relu(%s)" % v, lambda v: "abs(%s)" % v, lambda v: "exp(tanh(%s))" % v,
            lambda v: "log(%s * %s + 0.5)" % (v, v), lambda v: "sqrt(%s * %s + 0.5)" % (v, v),
            lambda v: "rsqrt(%s * %s + 1.0)" % (v, v), lambda v: "pow(abs(%s) + 0.5, 1.5)" % v,
            lambda v: "-%s * 0.5" % v, lambda v: "%s / (%s * %s + 2.0)" % (v, v, v),
        ]
        return (r or self.r).choice(fs)("(%s)" % x)

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
            return "%s * one_hot(argmax(%s, axis = -1), %d) + %s * 0.5" % (h, self.untied(h, -1), D, h)
        if k == 3:  # gather along T with indices from argmax over T
            am = self.bind("argmax(%s, axis = 1)" % self.untied(h, 1))  # [B, D]
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

    # ---- new blocks (seeds >= NEW_SEEDS), every choice from the stream q --------------
    def costly(self, x):
        return self.q.choice(["exp(tanh(%s))", "tanh(%s)", "gelu(%s)", "sigmoid(%s)", "%s * 0.7",
                              "silu(%s)", "exp(tanh(%s * 0.3) * 3.0)"]) % ("(%s)" % x)

    def sq_bcast(self, s, ax, keep, B, N, M):
        """s: a reduction of a [B, N, M] value along ax (keepdims or not), brought back to a
        shape that broadcasts onto [B, N, M] (its own row, or, where the shape allows,
        another's: the right-aligned broadcast of a reduced value onto a square)."""
        q = self.q
        ax = ax % 3
        if keep:
            k = q.randrange(6)
            if k == 0 or ax == 0:
                return s
            if k == 1 and N == M:  # [B, 1, N] <-> [B, N, 1]: another row's
                return "transpose(%s, 1, 2)" % s
            if k == 2:  # made explicit
                return "expand(%s, -1, %s)" % (s, ("%d, -1" % N) if ax == 1 else ("-1, %d" % M))
            if k == 3:
                return "repeat(%s, %d, axis = %d)" % (s, N if ax == 1 else M, ax)
            if k == 4:  # cut along the kept axis and put back (rotated)
                L = M if ax == 1 else N
                if L > 1:
                    c = q.randrange(1, L)
                    sl = lambda a, b: "%s[:, :, %d:%d]" % (s, a, b) if ax == 1 else "%s[:, %d:%d, :]" % (s, a, b)
                    return "concat(%s, %s * 1.5, axis = %d)" % (sl(c, L), sl(0, c), 3 - ax)
            if k == 5 and N == M:  # a reshape that moves the row axis: another row's
                return "reshape(%s, B, %s)" % (s, ("%d, 1" % M) if ax == 1 else ("1, %d" % N))
            return s
        if ax == 0:  # [N, M], right-aligned onto [B, N, M]
            k = q.randrange(3)
            if k == 1 and N == M:
                return "transpose(%s, 0, 1)" % s
            if k == 2:
                return "reshape(%s, 1, %d, %d)" % (s, N, M)
            return s
        L = M if ax == 1 else N  # [B, L]
        own = "reshape(%s, B, 1, %d)" % (s, L) if ax == 1 else "reshape(%s, B, %d, 1)" % (s, L)
        if N == M and q.random() < 0.5:  # another row's
            return "reshape(%s, B, 1, %d)" % (s, L) if ax == 2 else "reshape(%s, B, %d, 1)" % (s, L)
        return own

    def b_sq_reduce(self, h):
        """A square [B, T, T] (or [B, T, D]), a costly function of it, a reduction along any
        axis with or without keepdims broadcast back (own row or another's), and a row
        statistic of the result along any axis."""
        q, D, T = self.q, self.D, self.T
        M = T if q.random() < 0.75 else D
        a = "%s @ %s" % (h, self.param([D, M], r=q)) if M == T else h
        v = self.bind(self.costly(a))
        red = q.choice(["sum", "mean", "amax", "sum", "mean"])
        ax = q.choice([0, 1, 2, -1, -2])
        keep = q.random() < 0.5
        s = self.bind("%s(%s, axis = %d%s)" % (red, v, ax, ", keepdims = true" if keep else ""))
        b = self.sq_bcast(s, ax, keep, "B", T, M)
        w = self.bind("%s * 0.5 %s %s * 0.2" % (v, q.choice(["+", "-", "*"]), b))
        k = q.randrange(5)
        ax2 = q.choice([0, 1, 2, -1, -2])
        if k == 0:
            w = self.bind("softmax(%s, axis = %d)" % (w, ax2))
        elif k == 1:
            w = self.bind("log_softmax(%s, axis = %d) * 0.3" % (w, ax2))
        elif k == 2:
            w = self.bind("%s * rsqrt(mean(%s * %s, axis = %d, keepdims = true) + 0.1)" % (w, w, w, ax2))
        elif k == 3:
            w = self.bind("%s - amax(%s, axis = %d, keepdims = true)" % (w, w, ax2))
        return "%s @ %s" % (w, self.param([M, D], r=q)) if M == T else w

    def b_sq_matrix(self, h):
        """A [T, T] (from a mean over the batch axis): its reductions along 0 and 1 broadcast
        back right-aligned (row j's statistic at [i, j]) or in the keepdims form, then a
        product [T, T] @ [B, T, D]."""
        q, D, T = self.q, self.D, self.T
        a = self.bind(self.costly("%s @ %s" % (h, self.param([D, T], r=q))))
        m = self.bind(q.choice(["mean", "sum", "amax"]) + "(%s, axis = 0)" % a)
        m = self.bind(self.costly("%s * %s" % (m, self.param([T, T], r=q))))
        ax = q.choice([0, 1, -1, -2])
        red = q.choice(["sum", "mean", "amax"])
        if q.random() < 0.5:
            s = "%s(%s, axis = %d)" % (red, m, ax)  # [T]: right-aligned, s[j] at [i, j]
            b = s if q.random() < 0.6 else "reshape(%s, %d, 1)" % (s, T)
        else:
            s = "%s(%s, axis = %d, keepdims = true)" % (red, m, ax)
            b = s if q.random() < 0.5 else "transpose(%s, 0, 1)" % s
        w = self.bind("%s + %s * 0.3" % (m, b))
        if q.random() < 0.6:
            w = self.bind("%s(%s, axis = %d)" % (q.choice(["softmax", "log_softmax"]), w, q.choice([0, 1, -1])))
        return "(%s @ %s) * 0.3" % (w, h)

    def b_axis_norm(self, h):
        """softmax, log_softmax, layer and rms norms, cumsum, topk, argmax along axes other
        than the last."""
        q, D, T = self.q, self.D, self.T
        k = q.randrange(8)
        ax = q.choice([0, 1, -2])
        if k == 0:
            return "softmax(%s * %s, axis = %d)" % (self.costly(h), self.param([D], r=q), ax)
        if k == 1:
            return "log_softmax(%s, axis = %d) * 0.3" % (self.costly(h), ax)
        if k == 2:  # a layer norm by hand along ax
            v = self.bind(self.costly(h))
            mu = self.bind("mean(%s, axis = %d, keepdims = true)" % (v, ax))
            dv = self.bind("%s - %s" % (v, mu))
            return "%s * rsqrt(mean(%s * %s, axis = %d, keepdims = true) + 1e-5) * %s" % (
                dv, dv, dv, ax, self.param([D], r=q))
        if k == 3:  # the stdlib's norms along T
            f = q.choice(["nn.layernorm", "nn.rmsnorm"])
            return "transpose(%s(transpose(%s, 1, 2)), 1, 2)" % (f, self.costly(h))
        if k == 4:
            return "cumsum(%s, axis = %d) * 0.3" % (self.costly(h), q.choice([0, 1]))
        if k == 5:  # topk along T
            kk = q.randrange(1, T + 1)
            vals, idx = self.tmp(), self.tmp()
            self.emit("%s, %s = topk(%s, %d, axis = 1)" % (vals, idx, h, kk))
            return "transpose(transpose(%s, 1, 2) @ %s, 1, 2)" % (vals, self.param([kk, T], r=q))
        if k == 6:  # argmax along T with keepdims, gather there
            am = self.bind("argmax(%s, axis = 1, keepdims = true)" % self.untied(h, 1))  # [B, 1, D]
            return "gather(%s, %s, 1) * %s" % (self.costly(h), am, h)
        # a norm along the batch axis
        v = self.bind(self.costly(h))
        return "(%s - mean(%s, axis = 0, keepdims = true)) * rsqrt(mean(%s * %s, axis = 0, keepdims = true) + 0.5)" % (v, v, v, v)

    def untied(self, h, axis):
        """h plus a ramp of 0.001 a step along axis (-1: D, 1: T), for an argmax: a saturating
        function anywhere before (tanh of a large value is 1.0 in f32, not in float64) makes
        ties in f32 that float64 does not have, and the first index wins (seeds 10138,
        7000041: an argmax of h itself was not enough)"""
        if axis == 1:
            return "(%s) + reshape(cast(arange(%d), f32), %d, 1) * 0.001" % (h, self.T, self.T)
        return "(%s) + cast(arange(%d), f32) * 0.001" % (h, self.D)

    def b_int(self, h):
        """i32 arithmetic (/ toward zero with negative quotients, %, data-dependent divisors),
        comparisons on i32 and f32, where with tensor masks, and, or, not, casts."""
        q, D, T = self.q, self.D, self.T
        i = self.bind("argmax(%s, axis = -1)" % self.untied(h, -1))  # [B, T], in [0, D)
        j = self.bind(q.choice([
            "(%s * 7 - 9) / (%s %% 3 + 1)" % (i, i),
            "(%s - 3) / (0 - 2) + %s / 2" % (i, i),
            "(%s * %s - 5) / 3 - (%s + 1) %% 4" % (i, i, i),
            "(%s - 4) %% 3 * ((%s + 2) / 3)" % (i, i),
            # (+ 0.5: a saturated 1.0 in f32 is 0.99999999 in float64, and truncates to 2)
            "cast(%s * 3.0 + 0.5, i32) / 2" % ("%s[:, :, 0]" % h),
        ]))
        k = q.randrange(7)
        cmp = q.choice([">", "<", ">=", "<=", "==", "!="])
        c = q.choice(["0", "1", "2", "-1", i])
        mask = "%s %s %s" % (j, cmp, c)
        if k == 0:
            return "where(reshape(%s, B, %d, 1), %s, %s * 0.5)" % (mask, T, h, self.costly(h))
        if k == 1:
            return "where(%s > %s, %s, %s * 0.2)" % (h, q.choice(["0.0", "0.3", "-0.2"]), h, h)
        if k == 2:
            idx = self.bind("reshape((%s * 5 + 7) %% %d, B, %d, 1)" % (j, D, T))
            return "%s + gather(%s, %s, 2)" % (h, self.costly(h), idx)
        if k == 3:
            return "%s * one_hot((%s + %d) %% %d, %d) + %s * 0.5" % (h, j, D, D, D, h)
        if k == 4:
            return "%s + reshape(cast(%s, f32) * 0.05, B, %d, 1)" % (h, j, T)
        if k == 5:
            m2 = "%s %s %s" % (i, q.choice([">", "<", "=="]), q.choice(["1", "2", "3"]))
            comb = q.choice(["(%s) and (%s)", "(%s) or (%s)", "not (%s) or (%s)"]) % (mask, m2)
            return "where(reshape(%s, B, %d, 1), %s, full(0.25, %d))" % (comb, T, self.costly(h), D)
        # truncation of a float through i32 (no gradient there) scales h
        return "%s * cast(cast(%s * 4.0, i32) / 3, f32) * 0.2" % (self.costly(h), h)

    def b_matmul_bcast(self, h):
        q, D, T = self.q, self.D, self.T
        k = q.randrange(5)
        if k == 0:  # [T, T] @ [B, T, D]
            return "(%s @ %s) * 0.5" % (self.param([T, T], r=q), self.costly(h))
        if k == 1 and D % 2 == 0:  # 4-D against 2-D
            return "reshape(reshape(%s, B, %d, 2, %d) @ %s, B, %d, %d)" % (h, T, D // 2, self.param([D // 2, D // 2], r=q), T, D)
        if k == 2:  # [B, 1, T, D] @ [E, D, D]: broadcast both ways, then reduce the new axis
            E = q.choice([1, 2, 3])
            return "sum(reshape(%s, B, 1, %d, %d) @ %s, axis = 1) * 0.5" % (self.costly(h), T, D, self.param([E, D, D], r=q))
        if k == 3:  # a Gram matrix [B, D, D], softmax along an axis, back
            g = self.bind("transpose(%s, 1, 2) @ %s * 0.2" % (h, h))
            return "%s @ softmax(%s, axis = %d)" % (h, g, q.choice([0, 1, 2]))
        return "%s @ %s" % (h, self.param([1, D, D], r=q))

    def b_sdpa_var(self, h):
        """sdpa with S != T (causal top-left aligned), v's head size apart from q's, rank 3
        and rank 5 operands, bf16 operands."""
        q, D, T = self.q, self.D, self.T
        hs = q.choice([2, 4])
        hv = q.choice([2, 3, 4])
        H = q.choice([1, 2])
        S = q.randrange(1, T + 1)
        kv = h if S == T else "%s[:, %d:%d, :]" % (h, T - S, T) if q.random() < 0.5 else "%s[:, 0:%d, :]" % (h, S)
        args = []
        if q.random() < 0.5:
            args.append("causal = true")
        if q.random() < 0.3:
            args.append("scale = 0.5")
        rank = q.choice([3, 4, 4, 5])
        wq, wk, wv = self.param([D, H * hs], r=q), self.param([D, H * hs], r=q), self.param([D, H * hv], r=q)
        wo = self.param([H * hv, D], r=q)
        if rank == 3:  # the batch axis is the heads
            H = 1
            wq, wk, wv = self.param([D, hs], r=q), self.param([D, hs], r=q), self.param([D, hv], r=q)
            wo = self.param([hv, D], r=q)
            qq, kk, vv = "%s @ %s" % (h, wq), "%s @ %s" % (kv, wk), "%s @ %s" % (kv, wv)
        else:
            lead = "B, 1" if rank == 5 else "B"
            tr = (2, 3) if rank == 5 else (1, 2)
            f = lambda x, w, L, d: "transpose(reshape(%s @ %s, %s, %d, %d, %d), %d, %d)" % (x, w, lead, L, H, d, tr[0], tr[1])
            qq, kk, vv = f(h, wq, T, hs), f(kv, wk, S, hs), f(kv, wv, S, hv)
        # half operands not with split params: a rank's partial sums round apart from the
        # whole one's (the tp = 2 comparison would see bf16's rounding, 1e-4 and more)
        half = q.random() < 0.2 and not self.shard
        if half:
            t = q.choice(["bf16", "f16"])
            qq, kk, vv = ["cast(%s, %s)" % (x, t) for x in (qq, kk, vv)]
        y = "sdpa(%s)" % ", ".join([qq, kk, vv] + args)
        if half:
            y = "cast(%s, f32)" % y
        y = self.bind(y)
        if rank == 3:
            return "%s @ %s" % (y, wo)
        tr = (2, 3) if rank == 5 else (1, 2)
        return "reshape(transpose(%s, %d, %d), B, %d, %d) @ %s" % (y, tr[0], tr[1], T, H * hv, wo)

    def b_conv_var(self, h):
        q, D, T = self.q, self.D, self.T
        C = 2
        x = "stack(%s, tanh(%s), axis = 1)" % (h, h)
        kh, kw = q.choice([1, 2, 3]), q.choice([1, 2, 3])
        st, pad = q.choice([1, 2]), q.choice([0, 1, 2])
        oh, ow = (T + 2 * pad - kh) // st + 1, (D + 2 * pad - kw) // st + 1
        if oh < 1 or ow < 1:
            pad = 1
            oh, ow = (T + 2 * pad - kh) // st + 1, (D + 2 * pad - kw) // st + 1
        O = q.choice([1, 2])
        c = self.bind("conv2d(%s, %s, stride = %d, padding = %d)" % (x, self.param([O, C, kh, kw], r=q), st, pad))
        return "reshape(reshape(%s, B, %d) @ %s, B, %d, %d)" % (c, O * oh * ow, self.param([O * oh * ow, T * D], r=q), T, D)

    def b_half_ops(self, h):
        """bf16 and f16 tensors through reductions, softmax and products."""
        q, D, T = self.q, self.D, self.T
        t = q.choice(["bf16", "f16"])
        c = self.bind("cast(%s, %s)" % (h, t))
        k = q.randrange(4)
        if self.shard and k in (1, 2):  # a reduction or product over a split axis rounds per rank
            k = 3 if k == 2 else 0
        if k == 0:
            y = "softmax(%s * cast(%s, %s), axis = %d)" % (c, self.param([D], r=q), t, q.choice([-1, 1, 0]))
        elif k == 1:
            y = "%s - mean(%s, axis = %d, keepdims = true)" % (c, c, q.choice([1, 2]))
        elif k == 2:
            y = "%s @ cast(%s, %s)" % (c, self.param([D, D], r=q), t)
        else:
            y = "tanh(%s) * sum(%s, axis = 1, keepdims = true) * cast(0.1, %s)" % (c, c, t)
        return "cast(%s, f32)" % y

    def b_shape_red(self, h):
        """A reduction of h along any axis, with or without keepdims, through reshape,
        transpose, slice, concat, split, repeat or expand, broadcast back, then a softmax
        of the sum along the last axis."""
        q, D, T = self.q, self.D, self.T
        v = self.bind(self.costly(h))
        ax = q.choice([0, 1, 2])
        keep = q.random() < 0.5
        red = q.choice(["sum", "mean", "amax"])
        s = self.bind("%s(%s, axis = %d%s)" % (red, v, ax, ", keepdims = true" if keep else ""))
        k = q.randrange(5)
        if ax == 0:  # [1, T, D] or [T, D]
            if k == 0 and T > 1:
                b = "concat(%s, %s, axis = %d)" % ("%s[%s1:, :]" % (s, ":, " if keep else ""), "%s[%s0:1, :]" % (s, ":, " if keep else ""), 1 if keep else 0)
            elif k == 1 and D % 2 == 0:
                a1, a2 = self.tmp(), self.tmp()
                self.emit("%s, %s = split(%s, 2, axis = -1)" % (a1, a2, s))
                b = "concat(%s, %s * 2.0, axis = -1)" % (a2, a1)
            elif k == 2 and not keep:
                b = "reshape(%s, %d, %d)" % (s, T, D)
            else:
                b = s
        elif ax == 1:  # [B, 1, D] or [B, D]
            b3 = s if keep else "reshape(%s, B, 1, %d)" % (s, D)
            if k == 0:
                b = "repeat(%s, %d, axis = 1)" % (b3, T)
            elif k == 1:
                b = "expand(%s, -1, %d, -1)" % (b3, T)
            elif k == 2:  # [B, D, 1] @ [1, T]
                b = "transpose(transpose(%s, 1, 2) @ %s, 1, 2)" % (b3, self.param([1, T], r=q))
            elif k == 3 and D > 1:
                c = q.randrange(1, D)
                b = "concat(%s[:, :, %d:], %s[:, :, 0:%d], axis = 2)" % (b3, c, b3, c)
            else:
                b = b3
        else:  # [B, T, 1] or [B, T]
            b3 = s if keep else "reshape(%s, B, %d, 1)" % (s, T)
            if k == 0:
                b = "repeat(%s, %d, axis = 2)" % (b3, D)
            elif k == 1:
                b = "%s @ %s" % (b3, self.param([1, D], r=q))
            elif k == 2 and T > 1:
                b = "concat(%s[:, 1:, :], %s[:, 0:1, :], axis = 1)" % (b3, b3)
            elif k == 3:
                b = "transpose(%s, 1, 2) @ %s" % (b3, self.param([T, D], r=q))  # [B, 1, D]
            else:
                b = b3
        w = self.bind("%s + %s * 0.3" % (v, b))
        return q.choice(["softmax(%s, axis = -1)", "%s", "log_softmax(%s, axis = -1) * 0.3", "%s * rsqrt(mean(%s * %s, axis = -1, keepdims = true) + 0.1)"]).replace("%s", w)


    BLOCKS = [
        (b_elementwise, 5), (b_mlp, 4), (b_stdlib, 3), (b_norm_by_hand, 2), (b_softmax, 2),
        (b_cumsum, 1), (b_sdpa, 3), (b_attention_by_hand, 2), (b_stdlib_attention, 2),
        (b_shape, 4), (b_indexing, 3), (b_embedding, 1), (b_conv, 1), (b_moe, 1),
        (b_dropout, 1), (b_half, 1), (b_aux, 1), (b_def_loop, 2), (b_language, 3),
    ]

    NEW_BLOCKS = [
        (b_sq_reduce, 6), (b_sq_matrix, 3), (b_axis_norm, 3), (b_int, 3), (b_matmul_bcast, 2),
        (b_sdpa_var, 2), (b_conv_var, 1), (b_half_ops, 1), (b_shape_red, 3),
    ]

    def block(self, h):
        if self.new and self.q.random() < 0.6:
            q = self.q
            f = q.choice([f for f, w in self.NEW_BLOCKS for _ in range(w)])
            e = f(self, h)
            if e is None:
                return h
            return self.bind(("%s + %s" % (h, e)) if q.random() < 0.8 else e)
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
