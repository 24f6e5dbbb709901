# args: --emit=schedule --mesh pp=4 --microbatches 2
# input: tests/golden/models/gpt_auto.mpl
# 1f1b, pp = 4, 2 micro-batches (fewer than pp): the lower ranks never reach a steady state.
