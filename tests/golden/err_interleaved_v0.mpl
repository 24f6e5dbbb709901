# args: --emit=schedule --mesh pp=2 --schedule interleaved(0)
# input: tests/golden/models/gpt_auto.mpl
# interleaved needs v >= 1.
