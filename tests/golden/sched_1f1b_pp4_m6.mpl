# args: --emit=schedule --mesh pp=4 --microbatches 6
# input: tests/golden/models/gpt_auto.mpl
# 1f1b, pp = 4, 6 micro-batches (not a multiple of pp).
