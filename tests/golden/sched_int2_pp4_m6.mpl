# args: --emit=schedule --mesh pp=4 --schedule interleaved(2) --microbatches 6
# input: tests/golden/models/gpt_auto.mpl
# interleaved(2), pp = 4 (8 stages over 9 statements), 6 micro-batches.
