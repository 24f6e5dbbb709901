# args: --emit=partition
# input: tests/golden/models/tied.mpl
# A tied embedding: kept on both stages, gradient all-reduced among them.
