# args: --emit=schedule --mesh pp=2 --schedule interleaved:2 --microbatches 3
# input: tests/golden/models/gpt_auto.mpl
# interleaved:2 (the colon spelling), pp = 2, 3 micro-batches: a short last group.
