# args: --emit=grad
# input: tests/e2e/v2/tp_experts.mpl
# Expert parallelism at tp = 2 (issue 13): the products with the [experts, d, h] weights
# split on the expert axis stay split (the tokens enter once, tp_enter, shared by both
# products); the gates are cut per rank (tp_slice, free); the sum over experts is a
# partial sum, all-reduced once. The backward all-gathers the gates' gradient only.
