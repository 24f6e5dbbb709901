# args: --emit=grad
# input: tests/e2e/v2/tp_gqa.mpl
# Grouped-query attention at tp = 2 (issue 13): the fused sdpa (issue 14) and its
# log-sum-exp keep the split of the heads (q's 4 heads and k's and v's 2 over the tp
# ranks, a whole group of query heads with its kv head on each), and so does its
# sdpa_grad; rope's slices and concat and repeat's expand keep it too.
# The only collectives: tp_enter before the three column-parallel products and one
# all-reduce after wo. No all-gather.
