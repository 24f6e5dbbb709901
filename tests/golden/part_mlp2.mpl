# args: --emit=partition
# input: tests/golden/models/mlp2.mpl
# An MLP cut into 2 stages: one activation and one gradient transfer.
