# args: --emit=schedule --schedule zb --microbatches 3
# input: tests/golden/models/mlp2.mpl
# zb, pp = 2, 3 micro-batches: W passes fill the waits.
