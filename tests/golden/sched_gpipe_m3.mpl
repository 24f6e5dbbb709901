# args: --emit=schedule --schedule gpipe --microbatches 3
# input: tests/golden/models/mlp2.mpl
# gpipe, pp = 2, 3 micro-batches (not a multiple of pp).
