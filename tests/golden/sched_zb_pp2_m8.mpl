# args: --emit=schedule --mesh pp=2 --schedule zb --microbatches 8
# input: tests/golden/models/gpt_auto.mpl
# zb, pp = 2, 8 micro-batches.
