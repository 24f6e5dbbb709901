# mplrng.py — a Python port of MPL's counter RNG (runtime/mpl_rng.h: splitmix64 mixing,
# uniform and Box-Muller normal draws) and of synthetic(n)'s draw (runtime/data.c):
# synth(seed, input_index, count, 'f32' | 'i32', hi) gives the values of one input.
M64 = (1 << 64) - 1
def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)
def uniform(stream, i):
    return (mix64(stream ^ mix64(i)) >> 11) * (1.0 / 9007199254740992.0)
import math, struct
def normal(stream, i):
    u1 = uniform(stream, 2 * i); u2 = uniform(stream, 2 * i + 1)
    if u1 < 1e-300: u1 = 1e-300
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)
def f32(x): return struct.unpack('<f', struct.pack('<f', x))[0]
def synth_stream(seed, i): return mix64(mix64(seed ^ 0x73796E7468657469) ^ i)
def synth(seed, i, count, kind, hi=2):
    st = synth_stream(seed, i)
    if kind == 'f32': return [f32(normal(st, k)) for k in range(count)]
    out = []
    for k in range(count):
        x = math.floor(uniform(st, k) * hi); out.append(x if x < hi else hi - 1)
    return out
