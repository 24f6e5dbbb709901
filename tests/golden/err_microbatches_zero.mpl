# args: --emit=schedule --microbatches 0
# input: tests/golden/models/gpt_auto.mpl
# --microbatches 0.
