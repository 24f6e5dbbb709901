# args: --emit=schedule --mesh pp=4 --schedule gpipe --microbatches 2
# input: tests/golden/models/gpt_auto.mpl
# gpipe, pp = 4, 2 micro-batches (fewer than pp).
