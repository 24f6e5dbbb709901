# args: --emit=schedule --schedule sequential --microbatches 3
# input: tests/golden/models/mlp2.mpl
# sequential, pp = 2, 3 micro-batches (not a multiple of pp).
