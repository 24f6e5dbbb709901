# args: --emit=schedule --schedule 1f1b --microbatches 3
# input: tests/golden/models/mlp2.mpl
# 1f1b, pp = 2, 3 micro-batches (not a multiple of pp).
