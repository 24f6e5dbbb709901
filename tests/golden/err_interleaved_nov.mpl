# args: --emit=schedule --mesh pp=2 --schedule interleaved
# input: tests/golden/models/gpt_auto.mpl
# interleaved without its v.
