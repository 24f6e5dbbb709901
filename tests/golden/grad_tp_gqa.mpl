# args: --emit=grad
# input: tests/e2e/v2/tp_gqa.mpl
# Grouped-query attention at tp = 2 (issue 13): sdpa's views [B, Hkv, G, T, hs] and
# [B, Hkv, 1, S, hs], the broadcast products, the mask, the softmax and the view back
# keep the split of the heads; rope's slices and concat and repeat's expand keep it too.
# The only collectives: tp_enter before the three column-parallel products and one
# all-reduce after wo. No all-gather.
