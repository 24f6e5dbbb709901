# args: --emit=schedule --mesh pp=2 --schedule interleaved:65
# input: tests/golden/models/gpt_auto.mpl
# interleaved takes at most 64 chunks per rank.
