# args: --emit=schedule --mesh dp=5
# input: tests/golden/models/gpt_auto.mpl
# batch 24 does not divide by microbatches 4 * dp 5.
