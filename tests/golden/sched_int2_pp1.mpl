# args: --emit=schedule --mesh pp=1 --schedule interleaved(2) --microbatches 2
# input: tests/golden/models/gpt_auto.mpl
# interleaved(2) with pp = 1: two chunks on one rank, tied wte.weight within the rank.
