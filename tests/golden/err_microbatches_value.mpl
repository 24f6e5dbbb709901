# args: --emit=schedule --microbatches=-2
# input: tests/golden/models/gpt_auto.mpl
# --microbatches -2.
