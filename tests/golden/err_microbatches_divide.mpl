# args: --emit=schedule --microbatches 5
# input: tests/golden/models/gpt_auto.mpl
# batch 24 does not divide by 5 micro-batches.
