# args: --emit=graph --no-fused-sdpa
# sdpa as the front end lowers it with --no-fused-sdpa (issue 13; ok_sdpa_fused.mpl is the
# default, one fused op). 6 query heads over 2 kv heads: q is viewed
# as [B, 2, 3, T, hs] and k and v as [B, 2, 1, S, hs], so the broadcasting product pairs
# query head h with kv head h / 3 without copying k or v; causal with T = 4 > S = 3 cuts
# causal_mask(4) to [4, 3]; then the view back to [B, 6, T, hs]. Plain multi-head
# attention (H = Hkv) needs no views; scale replaces 1/sqrt(hs).
model m(q: f32[B, 6, 4, 8], k: f32[B, 2, 3, 8], v: f32[B, 2, 3, 8], y: i32[B]) {
  a = sdpa(q, k, v, causal = true)
  b = sdpa(q, q, q, scale = 0.5)
  return cross_entropy(sum(sum(a + b, axis = -1), axis = -1), y)
}
train m { batch = 2 }
