# args: --emit=schedule --mesh pp=4 --schedule zb --microbatches 6
# input: tests/golden/models/gpt_auto.mpl
# zb, pp = 4, 6 micro-batches (not a multiple of pp).
